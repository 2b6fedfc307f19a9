"""The offline profile, end to end on the CPU: spoken question in, first sample of the spoken answer out.

Ten spoken turns (espeak-ng prompts, one real recording) through the cascade backend's start/step
contract. Prints end of user speech -> first audio sample (p50/p95), ASR time, LLM first token,
LLM tokens/s, TTS real-time factor, peak RSS and start-up time; with --compare, the LLM sizes side
by side on the same text prompts (first token, tokens/s, answers).

    python bench/offline.py [--turns 10] [--model 0.5b|1.5b] [--bits 4|8|16] [--dtype bfloat16|float32]
    python bench/offline.py --compare 0.5b,0.5b:int8,0.5b:int4,1.5b:int4
    python bench/offline.py --pair [--pair-bits 8]   # the same turns on a twin that decodes with other
        # weights (default int8), alternating turn by turn
    python bench/offline.py --agreement [--model 1.5b]   # low-bit decode weights against bfloat16: the same
        # next token? (160 tokens of text fed one at a time) and decode step time
    python bench/offline.py --file-transcription   # decode speed after a file is transcribed in a child
        # process (as `serve` does) and then in this one (as it used to)
    python bench/offline.py --asr   # in-turn speech recognition: the 20 s window against faster-whisper's
        # transcribe (30 s windows, what turns used before), speed and word error rate on spoken questions
    python bench/offline.py --conversation   # one conversation, its history growing turn by turn: the
        # kept conversation cache against a twin that keeps only the system prompt's, alternating
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.config import EngineConfig, Profile
from assistant.events import AudioChunk, Transcript
from assistant.turns import Message, Request
from audio.io import load_audio, resample

SPEECH = Path(__file__).resolve().parents[2] / "shared/data/speech"
QUESTIONS = [
    "What is two plus two?",
    "What is the capital of France?",
    "How many days are in a week?",
    "What colour is the sky on a clear day?",
    "Name a fruit that is yellow.",
    "What is the opposite of hot?",
    "How many legs does a spider have?",
    "What is the largest planet in our solar system?",
    "Say hello to my friend Anna.",
]


def espeak(text: str, speed: int = 160) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(speed), "-w", f.name, text], check=True)
        with wave.open(f.name) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    return resample(pcm, rate, 16_000)


def speech_rss_mib(backend) -> float:
    """Peak RSS of the speech recognition process (it runs beside this one), in MiB."""
    status = Path(f"/proc/{backend.recognizer.pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


PERSONA = "You are Grok. Curious, direct and witty: you get to the point and enjoy a good joke."
MEMORY = "What you remember about Anna (use it when relevant):\n- Anna lives in Lyon.\n- Anna has a cat."


def spoken_turn(backend, pcm: np.ndarray, history: tuple = (), context: str | None = None) -> dict[str, float]:
    """One turn; the clock starts when the user's speech has ended (the whole clip is in hand)."""
    t0 = time.perf_counter()
    system = PERSONA if history or context else None
    request = Request((*history, Message("user", audio=pcm)), system=system, context=context, max_new_tokens=64)
    stream = backend.start(request)
    first_audio = None
    events = stream.drain()
    heard = " ".join(e.text for e in events if isinstance(e, Transcript))
    while True:
        if first_audio is None and any(isinstance(e, AudioChunk) for e in events):
            first_audio = time.perf_counter() - t0
        if stream.done:
            break
        backend.step([stream])
        events = stream.drain()
    stream.close()
    st = stream.stages
    return {
        "first_audio_s": first_audio if first_audio is not None else float("nan"),
        "asr_s": st.get("asr_s", 0.0),
        "first_token_s": st.get("llm_first_token_s", 0.0),
        "tok_s": st.get("decode_steps", 0) / st["decode_s"] if st.get("decode_s") else float("nan"),
        "tts_rtf": st["tts_s"] / st["tts_audio_s"] if st.get("tts_audio_s") else float("nan"),
        "text": stream.text,
        "heard": heard,
        "prompt_tokens": stream.prompt_tokens,
        "prefill_tokens": st.get("prefill_tokens", 0),
    }


def conversation(backend, config, clips, turns: int) -> None:
    """One conversation of `turns` spoken turns, each with the history so far and a recalled memory:
    our backend (the conversation's cache kept) against a twin sharing its models that keeps only
    the system prompt's cache (what the offline profile did before), alternating which goes first."""
    from assistant.backends.cascade import CascadeBackend
    from assistant.offline.llm import OfflineLLM

    llm = backend.llm
    twin = CascadeBackend(OfflineLLM(llm.model, llm.tokenizer, llm.path), backend.recognizer, backend.speaker,
                          backend.reader, config.max_context_tokens, keep_conversation=False)  # fmt: skip
    history: tuple = ()
    ours, theirs = [], []
    for i in range(turns):
        pcm = clips[i % len(clips)][1]
        if i % 2:
            b = spoken_turn(twin, pcm, history, MEMORY)
        r = spoken_turn(backend, pcm, history, MEMORY)
        if not i % 2:
            b = spoken_turn(twin, pcm, history, MEMORY)
        ours.append(r)
        theirs.append(b)
        print(f"  turn {i + 1:2d}: prompt {r['prompt_tokens']:4d} tokens; prefilled {r['prefill_tokens']:4d} vs "
              f"{b['prefill_tokens']:4d}; first audio {r['first_audio_s']:.3f} s vs "
              f"{b['first_audio_s']:.3f} s")  # fmt: skip
        history += (Message("user", r["heard"]), Message("assistant", r["text"]))
    a = [r["first_audio_s"] for r in ours]
    b = [r["first_audio_s"] for r in theirs]
    ratio = percentile(a, 50) / percentile(b, 50)
    print(f"\n{turns} turns of one conversation: end of speech -> first audio p50 {percentile(a, 50):.3f} s "
          f"p95 {percentile(a, 95):.3f} s with the conversation cache; {percentile(b, 50):.3f} s / "
          f"{percentile(b, 95):.3f} s with the system prompt's only (p50 ratio {ratio:.2f}x)")  # fmt: skip


def compare_sizes(sizes: list[str], dtype) -> None:
    from assistant.offline.llm import load_llm
    from assistant.offline.weights import llm_path

    system = {"role": "system", "content": "You are a helpful voice assistant. Answer in one short sentence."}
    prompts = [
        "What is two plus two?",
        "What is the capital of France?",
        "My name is Egor. What is my name?",
        "Why is the sky blue?",
    ]
    rows = []
    for name in sizes:
        size, _, mode = name.partition(":")
        t0 = time.perf_counter()
        llm = load_llm(llm_path(size), dtype=dtype, bits={"int8": 8, "int4": 4}.get(mode))
        load_s = time.perf_counter() - t0
        firsts, rates = [], []
        for prompt in prompts:
            ids, prefix = llm.encode([system, {"role": "user", "content": prompt}])
            t0 = time.perf_counter()
            gen = llm.start(ids, prefix, max_new_tokens=40)
            firsts.append(time.perf_counter() - t0)
            t0, n = time.perf_counter(), 0
            while not gen.finished:
                llm.decode([gen])
                n += 1
            rates.append(n / (time.perf_counter() - t0) if n else float("nan"))
            print(f"  {name:9s} {prompt!r:40s} -> {gen.take_text()!r}")
        rows.append((name, load_s, statistics.median(firsts), statistics.median(rates)))
        del llm
    print("\nmodel      load s  first token s  tokens/s")
    for name, load_s, first, rate in rows:
        print(f"{name:9s}  {load_s:6.2f}  {first:13.3f}  {rate:8.1f}")
    for name, _, _, rate in rows[1:]:
        print(f"tokens/s ratio {name}/{rows[0][0]}: {rate / rows[0][3]:.2f}x")


AGREEMENT_TEXT = (
    "The user asked what the weather would be like tomorrow in Lyon, and the assistant said it could not check "
    "the forecast offline, but suggested looking outside in the morning. Then they talked about cats: Anna has a "
    "cat called Tom who likes to sleep on the piano. My name is Igor and I live in Berlin. Who am I? You are Igor, "
    "and you live in Berlin. What is two plus two? Two plus two is four."
)


def agreement(model: str | None) -> None:
    """Each decode-weight choice against bfloat16 on the same text, one token at a time (decode
    kernels): how often the next token picked is the same, the KL divergence, and the step time.
    Then prompts: the text's first 40 tokens as one prompt, the rest decoded a token at a time, with
    the default decode weights and the prompt on int8 (default) or on the original weights."""
    import torch
    from transformers import DynamicCache

    from assistant.offline.llm import INT4_KEEPS_INT8, W8A8_LAYERS, load_llm, quantize
    from assistant.offline.weights import llm_path

    path = llm_path(model or "0.5b")

    def run(llm, prompt: int = 1) -> tuple[torch.Tensor, float]:
        ids = llm.tokenizer(AGREEMENT_TEXT)["input_ids"][:160]
        cache, logits, times = DynamicCache(config=llm.config), [], []
        for i in range(prompt, len(ids) + 1):
            piece = ids[:prompt] if i == prompt else ids[i - 1 : i]
            t0 = time.perf_counter()
            out = llm.model(input_ids=torch.tensor([piece]), position_ids=torch.arange(i - len(piece), i)[None],
                            past_key_values=cache, use_cache=True, logits_to_keep=1)  # fmt: skip
            times.append(time.perf_counter() - t0)
            cache = out.past_key_values
            logits.append(out.logits[0, -1].float())
        return torch.stack(logits), 1000 * statistics.median(times)

    def compare(name: str, got: torch.Tensor, want: torch.Tensor, ms: float | None = None) -> None:
        same = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
        kl = torch.nn.functional.kl_div(got.log_softmax(-1), want.log_softmax(-1), log_target=True,
                                        reduction="batchmean").item()  # fmt: skip
        step = f"  step {ms:.1f} ms ({ref_ms / ms:.2f}x bfloat16)" if ms is not None else ""
        print(f"{name:28s} same next token {same:.3f}  KL {kl:.4f}{step}")

    with torch.inference_mode():
        bf16 = load_llm(path)
        reference, ref_ms = run(bf16)
        prompted = run(bf16, 40)[0]
        del bf16
        print(f"bfloat16: step {ref_ms:.1f} ms")
        # (int8 inputs in 7 bits: what a CPU without AVX-512 VNNI gets, see offline.w8a8)
        for name, bits, keep, w8a8, inputs in (("int8", 8, (), (), "auto"), ("int4 everywhere", 4, (), (), "auto"),
                                               ("int4, some int8", 4, INT4_KEEPS_INT8, (), "auto"),
                                               ("int4 (default)", 4, INT4_KEEPS_INT8, W8A8_LAYERS, "auto"),
                                               ("int4 (default), 7-bit inputs", 4, INT4_KEEPS_INT8, W8A8_LAYERS, 7)):
            llm = load_llm(path)
            quantize(llm.model, bits, None, keep, w8a8, input_bits=inputs)
            got, ms = run(llm)
            compare(name, got, reference, ms)
        for name, int8_prompts, inputs in (("default, prompt on int8", True, "auto"),
                                           ("default, prompt on int8 7-bit", True, 7),
                                           ("default, prompt on bfloat16", False, "auto")):
            llm = load_llm(path)
            quantize(llm.model, 4, None, int8_prompts=int8_prompts, input_bits=inputs)
            compare(name, run(llm, 40)[0], prompted)


def file_transcription(model: str | None) -> None:
    """Decode step time before and after a file transcription: in a child process first, then
    in this process (last: its effect lasts as long as the process)."""
    import torch

    from assistant.offline.llm import load_llm
    from assistant.offline.weights import llm_path
    from audio import transcribe
    from audio.isolated import TranscriberProcess

    llm = load_llm(llm_path(model or "0.5b"), bits=4)
    gen = llm.start(llm.encode([{"role": "user", "content": "Tell me a long story about a cat."}])[0], 0, 100_000)

    def step_ms() -> float:
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            llm.decode([gen])
            times.append(time.perf_counter() - t0)
        return 1000 * statistics.median(times)

    step_ms()
    clip = SPEECH / "openai_whisper/jfk.flac"
    base = step_ms()
    worker = TranscriberProcess()
    worker.transcribe(clip)
    child = step_ms()
    worker.close()
    transcribe(clip)
    here = step_ms()
    print(f"decode step, torch threads {torch.get_num_threads()}: {base:.1f} ms before; {child:.1f} ms after a "
          f"transcription in a child process ({child / base:.2f}x); {here:.1f} ms after one in this process "
          f"({here / base:.2f}x)")


ASR_QUESTIONS = [
    *QUESTIONS, "Tell me a short joke.", "No, my name is Igor.", "Remind me to call my mother tomorrow at noon.",
    "What's the weather like in Berlin today?", "Can you explain how a rainbow forms?", "Who wrote Romeo and Juliet?",
    "Set a timer for ten minutes.", "I have a headache, what should I do?", "How far away is the moon?",
    "Give me three ideas for dinner tonight.", "Why is the ocean salty?", "Stop.", "Thanks, that's all for now.",
    "How do I boil an egg?", "Call me Max from now on.",
]
NUMBERS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
           "8": "eight", "9": "nine", "10": "ten", "colour": "color", "favourite": "favorite"}


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """bench/transcribe.py's word edit distance and reference length, digits spelled out and
    British spellings made American first (the model writes "2" and "color" for "two" and "colour")."""
    from bench.transcribe import edits, words

    def spelled(text: str) -> str:
        return " ".join(NUMBERS.get(w, w) for w in words(text))

    return edits(spelled(reference), spelled(hypothesis))


def asr_clips() -> list[tuple[str, str, np.ndarray]]:
    """(voice, reference, 16 kHz audio): the questions by espeak-ng at three speeds and twice by
    the Piper voice, and the short English recordings of ../shared/data/speech."""
    import json

    from assistant.offline.tts import load_speaker

    clips = []
    for speed in (140, 160, 180):
        clips += [(f"espeak {speed}", q, espeak(q, speed)) for q in ASR_QUESTIONS]
    voice = load_speaker()
    for _ in range(2):  # Piper's voice varies from one rendering to the next
        for q in ASR_QUESTIONS:
            clips.append(("piper", q, resample(voice.speak(q), voice.sample_rate, 16_000).astype(np.float32)))
    for item in json.loads((SPEECH / "transcripts.json").read_text())["items"]:
        if item["language"] == "en" and item.get("reference") and "channel" not in item and item["duration_s"] < 20:
            clips.append((item["id"], item["reference"], np.asarray(load_audio(SPEECH / item["file"]), np.float32)))
    return clips


def asr() -> None:
    """The in-turn recognizer's windowed decoding against faster-whisper's transcribe, alternating
    clip by clip in this process."""
    from assistant.offline.asr import WhisperTurns

    whisper = WhisperTurns.load()
    clips = asr_clips()
    full = WhisperTurns(whisper._model, window_s=30)
    ways = {"faster-whisper transcribe (30 s window, as before)": whisper._long,
            "turn decoding, 30 s window": full.transcribe,
            f"turn decoding, {whisper.window_s} s window (default)": whisper.transcribe}
    for fn in ways.values():
        fn(clips[0][2])
    times = {name: [] for name in ways}
    errors = dict.fromkeys(ways, 0)
    total = 0
    for _, reference, pcm in clips:
        for name, fn in ways.items():
            t0 = time.perf_counter()
            text = fn(pcm)
            times[name].append(time.perf_counter() - t0)
            wrong, n = word_errors(reference, text)
            errors[name] += wrong
        total += n
    median_s = statistics.median(len(c[2]) for c in clips) / 16_000
    print(f"{len(clips)} clips, {total} words; median clip {median_s:.1f} s")
    base = statistics.median(next(iter(times.values())))
    for name in ways:
        med = statistics.median(times[name])
        print(f"  {name}: median {med:.3f} s ({med / base:.2f}x), p95 {percentile(times[name], 95):.3f} s, "
              f"word error rate {errors[name] / total:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--model", default=None, help="0.5b (default), 1.5b or a converted folder")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--compare", default="", help="comma-separated LLMs to compare, e.g. 0.5b,0.5b:int8,1.5b:int4")
    ap.add_argument("--bits", type=int, default=4, choices=[4, 8, 16], help="decode weights (16: bfloat16)")
    ap.add_argument("--pair-bits", type=int, default=8, choices=[4, 8, 16], help="the --pair twin's decode weights")
    ap.add_argument("--threads", type=int, help="torch threads (default: one per core)")
    ap.add_argument("--agreement", action="store_true", help="low-bit decode weights against bfloat16")
    ap.add_argument("--file-transcription", action="store_true",
                    help="decode speed after a file transcription in a child process and in this one")
    ap.add_argument("--asr", action="store_true", help="in-turn speech recognition: 20 s window against 30 s")
    ap.add_argument("--conversation", action="store_true",
                    help="one growing conversation: the kept conversation cache against the system prompt's only")
    ap.add_argument("--pair", action="store_true",
                    help="also run each turn on a twin backend that decodes with --pair-bits weights, alternating")
    args = ap.parse_args()
    import torch

    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare:
        compare_sizes(args.compare.split(","), dtype)
        return
    if args.agreement:
        agreement(args.model)
        return
    if args.file_transcription:
        file_transcription(args.model)
        return
    if args.asr:
        asr()
        return

    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    t0 = time.perf_counter()
    from assistant.backends.cascade import load_cascade_backend

    config = EngineConfig(profile=Profile.OFFLINE, model=args.model)
    backend = load_cascade_backend(config, dtype=dtype, weight_bits=None if args.bits == 16 else args.bits)
    startup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    backend.warm_up()  # the engine does this on its own thread while a server starts listening
    warm_s = time.perf_counter() - t0
    clips = [("real:jfk", load_audio(SPEECH / "openai_whisper/jfk.flac"))]
    clips += [(f"espeak:{q}", espeak(q)) for q in QUESTIONS]
    spoken_turn(backend, espeak("Good morning, how are you?"))  # one untimed turn (its transcript is not reused)
    if args.conversation:
        conversation(backend, config, clips[1:], args.turns)
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return
    twin = None
    if args.pair:
        from assistant.backends.cascade import CascadeBackend
        from assistant.offline.llm import load_llm

        twin = CascadeBackend(load_llm(backend.llm.path, dtype=dtype), backend.recognizer, backend.speaker,
                              backend.reader, config.max_context_tokens,
                              weight_bits=None if args.pair_bits == 16 else args.pair_bits)  # fmt: skip
        twin.warm_up()
        spoken_turn(twin, espeak("Good morning, how are you?"))
    results, baseline = [], []
    for i in range(args.turns):
        name, pcm = clips[i % len(clips)]
        if twin is not None and i % 2:  # alternate which one goes first
            baseline.append(spoken_turn(twin, pcm))
        r = spoken_turn(backend, pcm)
        if twin is not None and not i % 2:
            baseline.append(spoken_turn(twin, pcm))
        results.append(r)
        print(
            f"  {name[:30]:30s} first audio {r['first_audio_s']:.3f} s  asr {r['asr_s']:.3f}  "
            f"first token {r['first_token_s']:.3f}  heard {r['heard'][:40]!r} -> {r['text'][:50]!r}"
        )

    def col(key):
        return [r[key] for r in results if not np.isnan(r[key])]

    first = col("first_audio_s")
    print(
        f"\n{args.turns} spoken turns, LLM {args.model or '0.5b'} {args.dtype}"
        f"{'' if args.bits == 16 else f' with int{args.bits} decode weights'},"
        f" torch threads {torch.get_num_threads()}"
    )
    print(f"end of speech -> first audio sample: p50 {percentile(first, 50):.3f} s  p95 {percentile(first, 95):.3f} s")
    print(f"ASR (tiny.en int8):         median {statistics.median(col('asr_s')):.3f} s")
    print(f"LLM first token (prefill):  median {statistics.median(col('first_token_s')):.3f} s")
    print(f"LLM decode:                 median {statistics.median(col('tok_s')):.1f} tokens/s")
    print(f"TTS real-time factor:       median {statistics.median(col('tts_rtf')):.3f}")
    print(f"peak RSS:                   {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, "
          f"speech recognition process {speech_rss_mib(backend):.0f} MiB")
    if baseline:
        base = [r["first_audio_s"] for r in baseline]
        ratios = [b["first_audio_s"] / r["first_audio_s"] for b, r in zip(baseline, results, strict=True)]
        speed = [r["tok_s"] / b["tok_s"] for b, r in zip(baseline, results, strict=True)]
        print(
            f"twin decoding with {'bfloat16' if args.pair_bits == 16 else f'int{args.pair_bits}'} weights,"
            " same turns alternating:"
            f" first audio p50 {percentile(base, 50):.3f} s  p95 {percentile(base, 95):.3f} s;"
            f" paired median ratio twin/ours {statistics.median(ratios):.2f}x;"
            f" decode tokens/s ours/twin {statistics.median(speed):.2f}x"
        )
    print(f"start-up: load {startup_s:.2f} s (OCR still loading), warm-up {warm_s:.2f} s")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
