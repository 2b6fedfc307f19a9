"""Real-size omni architectures with RANDOM weights, through our engine, on one GPU.

    PYTHONPATH=. python bench/gpu.py --arch qwen2_5_omni --size full --engine --speech   (on a GPU)
    PYTHONPATH=. python bench/gpu.py --arch qwen3_omni --size small --device cpu --engine --speech

No weights are downloaded: the model is built from a config with the real checkpoint's dimensions
(`--size full`; `small` is the same architecture scaled down, to test this script on a CPU),
directly on the device in bf16, with random weights. The tokenizer and processor are the tiny
profile's (a tokenizer has no size; its special-token ids go into the config). Random weights
never stop on their own, so end-of-text is ignored and the talker never picks its end or pad
codes: every reply has exactly --tokens text tokens, and speech runs to the talker's cap.

--engine: text-only turns from 1, 8, 16 sessions at once (first token p50, aggregate tokens/s,
peak GPU memory), as bench/engine.py. --speech: spoken turns one at a time, then --concurrent
at once (submitted turn -> first audio chunk p50/p95, audio seconds per wall second per turn),
as bench/latency.py. --breakdown: each stage timed with the GPU synchronised around it, over one
spoken turn and one batch of text turns. --diagnose: where the engine thread's wall time goes
(no extra synchronisation) for 8 and 16 text sessions and one spoken turn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.backends.omni import ARCHS, OmniBackend
from assistant.backends.tiny import SPECIAL_2_5, SPECIAL_3, tiny_model_path
from assistant.config import EngineConfig, Profile
from assistant.engine import Engine
from assistant.events import AudioChunk, Done, TextDelta
from assistant.turns import Message, Request

VOCAB = 152064  # both real thinkers' vocabulary


# --------------------------------------------------------------------------- configs
def _rope(sections, interleaved=False, theta=1_000_000.0):
    rope = {"rope_type": "default", "rope_theta": theta, "mrope_section": list(sections)}
    if interleaved:
        rope.update(interleaved=True, mrope_interleaved=True)
    return rope


def config_2_5(tok, size: str):
    """Qwen2.5-Omni-7B: transformers' defaults are the 7B thinker, audio encoder and token2wav; the
    talker and the vision width are set to the released checkpoint's (talker 896 wide, 24 layers)."""
    from transformers import Qwen2_5OmniConfig

    ids = {k: tok.convert_tokens_to_ids(v) for k, v in SPECIAL_2_5.items()}
    media = dict(audio_token_index=ids["audio"], image_token_index=ids["image"], video_token_index=ids["video"],
                 audio_start_token_id=ids["audio_bos"], audio_end_token_id=ids["audio_eos"],
                 vision_start_token_id=ids["vision_bos"], vision_end_token_id=ids["vision_eos"])
    if size == "full":
        text = dict(vocab_size=VOCAB, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                    num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False,
                    rope_parameters=_rope([16, 24, 24]))
        audio = dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                     output_dim=3584)
        vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                      fullatt_block_indexes=[7, 15, 23, 31])
        talker = dict(hidden_size=896, intermediate_size=18944, num_hidden_layers=24, num_attention_heads=12,
                      num_key_value_heads=4, head_dim=128, vocab_size=8448, embedding_size=3584,
                      rope_parameters=_rope([16, 24, 24]))
        token2wav = {}  # transformers' defaults: DiT 1024 x 22 layers, BigVGAN 1536 channels
    else:
        text = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                    rope_parameters=_rope([2, 3, 3]))
        audio = dict(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, output_dim=64)
        vision = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=64,
                      fullatt_block_indexes=[0])
        talker = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, vocab_size=8448, embedding_size=64,
                      rope_parameters=_rope([2, 3, 3]))
        token2wav = dict(
            dit_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16, ff_mult=2,
                            emb_dim=16, num_embeds=8193, mel_dim=80, enc_emb_dim=16, enc_dim=16,
                            enc_channels=[16, 16, 16, 16, 48], enc_attention_channels=8, enc_se_channels=8,
                            block_size=24, look_ahead_layers=[1], look_backward_layers=[0], repeats=2),
            bigvgan_config=dict(mel_dim=80, upsample_initial_channel=64, resblock_kernel_sizes=[3],
                                resblock_dilation_sizes=[[1, 3, 5]], upsample_rates=[5, 3, 2, 2, 2, 2],
                                upsample_kernel_sizes=[11, 7, 4, 4, 4, 4]))
    thinker = dict(audio_config=audio, vision_config=vision, text_config=text,
                   user_token_id=tok.convert_tokens_to_ids("user"), **media)
    talker.update(media, tts_text_start_token_id=ids["tts_bos"], tts_text_end_token_id=ids["tts_eos"],
                  tts_text_pad_token_id=ids["tts_pad"], tts_codec_start_token_id=8293, tts_codec_end_token_id=8294,
                  tts_codec_pad_token_id=8292, tts_codec_mask_token_id=8296)
    return Qwen2_5OmniConfig(thinker_config=thinker, talker_config=talker, token2wav_config=token2wav,
                             enable_audio_output=True), ids


def config_3(tok, size: str):
    """Qwen3-Omni-30B-A3B(-Instruct) as its released config.json has it (thinker 48 MoE layers of
    128 experts, 8 active; talker 20 MoE layers, 16 code groups; Code2Wav 8 layers)."""
    from transformers import Qwen3OmniMoeConfig

    ids = {k: tok.convert_tokens_to_ids(v) for k, v in SPECIAL_3.items()}
    media = dict(audio_token_id=ids["audio"], image_token_id=ids["image"], video_token_id=ids["video"],
                 audio_start_token_id=ids["audio_bos"], vision_start_token_id=ids["vision_bos"])
    if size == "full":
        text = dict(vocab_size=VOCAB, hidden_size=2048, intermediate_size=768, moe_intermediate_size=768,
                    num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                    num_experts=128, num_experts_per_tok=8, decoder_sparse_step=1, norm_topk_prob=True,
                    tie_word_embeddings=False, rope_parameters=_rope([24, 20, 20], interleaved=True))
        audio = dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                     output_dim=2048, n_window=50, n_window_infer=800, downsample_hidden_size=480)
        vision = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=2048,
                      patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                      deepstack_visual_indexes=[8, 16, 24])
        talker_text = dict(vocab_size=3072, hidden_size=1024, intermediate_size=2048, moe_intermediate_size=384,
                           shared_expert_intermediate_size=768, num_hidden_layers=20, num_attention_heads=16,
                           num_key_value_heads=2, head_dim=128, num_experts=128, num_experts_per_tok=6,
                           norm_topk_prob=True, rope_parameters=_rope([24, 20, 20], interleaved=True))
        predictor = dict(vocab_size=2048, hidden_size=1024, intermediate_size=3072, num_hidden_layers=5,
                         num_attention_heads=16, num_key_value_heads=8, head_dim=128, num_code_groups=16,
                         rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0})
        groups, accept, thinker_hidden = 16, 24, 2048
        code2wav = dict(codebook_size=2048, hidden_size=1024, num_hidden_layers=8, num_attention_heads=16,
                        num_key_value_heads=16, intermediate_size=3072, num_quantizers=16, decoder_dim=1536,
                        upsample_rates=[8, 5, 4, 3], upsampling_ratios=[2, 2], sliding_window=72)
    else:
        moe = dict(moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1, head_dim=8)
        text = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                    rope_parameters=_rope([2, 1, 1], interleaved=True), **moe)
        audio = dict(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, output_dim=32,
                     n_window=50, n_window_infer=800, downsample_hidden_size=8)
        vision = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32, patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                      deepstack_visual_indexes=[0])
        talker_text = dict(vocab_size=3072, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, shared_expert_intermediate_size=16,
                           rope_parameters=_rope([2, 1, 1], interleaved=True), **moe)
        predictor = dict(vocab_size=2048, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_code_groups=4,
                         rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0})
        groups, accept, thinker_hidden = 4, 1, 32
        code2wav = dict(codebook_size=2048, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=2, intermediate_size=64, num_quantizers=4, decoder_dim=32,
                        upsample_rates=[8, 5, 4, 3], upsampling_ratios=[2, 2], sliding_window=72)
    thinker = dict(audio_config=audio, vision_config=vision, text_config=text, **media)
    talker = dict(text_config=talker_text, code_predictor_config=predictor, num_code_groups=groups,
                  thinker_hidden_size=thinker_hidden, accept_hidden_layer=accept, codec_pad_id=2148,
                  codec_bos_id=2149, codec_eos_token_id=2150, codec_nothink_id=2155, codec_think_bos_id=2156,
                  codec_think_eos_id=2157, speaker_id={"chelsie": 2301, "ethan": 2302, "aiden": 2303},
                  spatial_merge_size=2, position_id_per_seconds=13, seconds_per_chunk=2, **media)
    config = Qwen3OmniMoeConfig(
        thinker_config=thinker, talker_config=talker, code2wav_config=code2wav, enable_audio_output=True,
        tts_pad_token_id=ids["tts_pad"], tts_bos_token_id=ids["tts_bos"], tts_eos_token_id=ids["tts_eos"],
        im_start_token_id=ids["bos"], im_end_token_id=ids["eos"],
        system_token_id=tok.convert_tokens_to_ids("system"), user_token_id=tok.convert_tokens_to_ids("user"),
        assistant_token_id=tok.convert_tokens_to_ids("assistant"))
    return config, ids


# --------------------------------------------------------------------------- model
def build(arch: str, size: str, device: str, dtype: torch.dtype, log):
    """Random model of `arch` on `device`, plus the tiny profile's processor."""
    import transformers

    spec = ARCHS[arch]
    path = tiny_model_path(arch)
    processor = getattr(transformers, spec.processor_cls).from_pretrained(path)
    config, ids = (config_2_5 if arch == "qwen2_5_omni" else config_3)(processor.tokenizer, size)
    cls = getattr(transformers, spec.model_cls)
    t0 = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.manual_seed(0)
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device):
            model = cls(config).eval()
    finally:
        torch.set_default_dtype(previous)
    fixed = _fill_uninitialised(model)
    if arch == "qwen3_omni" and getattr(config.talker_config, "audio_config", None) is None:
        config.talker_config.audio_config = config.thinker_config.audio_config  # as load_omni_backend does
    _sync(device)
    built = time.perf_counter() - t0
    counts = {name: sum(p.numel() for p in getattr(model, name).parameters())
              for name in ("thinker", "talker", "token2wav", "code2wav") if hasattr(model, name)}
    dtypes = {name: str(next(getattr(model, name).parameters()).dtype)
              for name in counts}
    sizes = json.dumps({k: f"{v / 1e9:.3f}B" for k, v in counts.items()})
    log(f"built {arch} ({size}) on {device} in {built:.1f} s; params {sizes}"
        f" total {sum(counts.values()) / 1e9:.3f}B; dtypes {dtypes}; re-initialised {fixed} tensors")
    if device.startswith("cuda"):
        log(f"weights on GPU: {torch.cuda.memory_allocated() / 2**30:.2f} GiB")
    _never_stop(model, arch, len(processor.tokenizer))
    if arch == "qwen2_5_omni":
        dit = config.token2wav_config.dit_config
        gen = torch.Generator().manual_seed(0)
        model.speaker_map = {name: {"bos_token": ids["tts_bos"], "cond": torch.randn(1, dit.enc_emb_dim, generator=gen),
                                    "ref_mel": torch.randn(1, 300, dit.mel_dim, generator=gen)}
                             for name in spec.voices}
    return model, processor, spec


@torch.no_grad()
def _fill_uninitialised(model) -> int:
    """Matrices random init leaves as torch.empty (garbage on a GPU) get small normal weights."""
    n = 0
    for _, p in model.named_parameters():
        if p.dim() < 2:
            if not torch.isfinite(p).all():
                p.zero_()
                n += 1
            continue
        a = p.detach().abs().amax().float()
        if not torch.isfinite(a) or a > 10 or a == 0:
            p.normal_(0.0, 0.02)
            n += 1
    return n


@torch.no_grad()
def _never_stop(model, arch: str, n_tokens: int) -> None:
    """Random talkers would stop (or, for Qwen2.5, pick codes the DiT has no embedding for) at random:
    zero those output rows, so their logit sits in the middle and top-k sampling never reaches it.
    The thinker's logits beyond the (tiny) tokenizer's vocabulary are masked after the full-size
    lm_head, so every sampled token decodes to text, as a real model's would."""

    def mask(_module, _inputs, logits):
        logits[..., n_tokens:] = float("-inf")

    model.thinker.lm_head.register_forward_hook(mask)
    if arch == "qwen2_5_omni":
        t = model.talker
        rows = list(range(model.config.token2wav_config.dit_config.num_embeds - 1, t.codec_head.weight.shape[0]))
        rows += [t.codec_eos_token, t.codec_pad_token]
        t.codec_head.weight[rows] = 0
    else:
        model.talker.codec_head.weight[model.config.talker_config.codec_eos_token_id] = 0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_engine(model, processor, spec, device: str, max_batch: int, stream_speech: bool = True) -> Engine:
    backend = OmniBackend(model, processor, spec, torch.device(device), 8192, None, stream_speech)
    backend.eos_ids = set()  # random weights: every reply runs to max_new_tokens
    return Engine(backend, EngineConfig(profile=Profile.OMNI, max_batch=max_batch))


# --------------------------------------------------------------------------- measurements
def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def _text_turn(engine, i: int, tokens: int):
    req = Request((Message("user", f"Session {i}: tell me about the weather in Paris today."),),
                  speak=False, max_new_tokens=tokens, seed=i, temperature=0.7)
    t0 = time.perf_counter()
    first, n = None, 0
    async for ev in engine.stream(req):
        if isinstance(ev, TextDelta) and first is None:
            first = time.perf_counter() - t0
        if isinstance(ev, Done):
            n = ev.completion_tokens
    return first if first is not None else float("nan"), n


async def _gather_text(engine, n: int, tokens: int):
    return await asyncio.gather(*(_text_turn(engine, i, tokens) for i in range(n)))


def bench_engine(engine, sessions, tokens, rounds, device, log) -> list:
    async def one_round(n):
        t0 = time.perf_counter()
        res = await asyncio.gather(*(_text_turn(engine, i, tokens) for i in range(n)))
        return [r[0] for r in res], sum(r[1] for r in res), time.perf_counter() - t0

    asyncio.run(one_round(1))  # warm-up
    rows = []
    for n in sessions:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        firsts, total, wall = [], 0, 0.0
        for _ in range(rounds):
            f, toks, w = asyncio.run(one_round(n))
            firsts += f
            total += toks
            wall += w
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
        rows.append((n, statistics.median(firsts), max(firsts), total / wall, total, peak))
        log(f"  {n} sessions: first token p50 {rows[-1][1] * 1000:.1f} ms, max {rows[-1][2] * 1000:.1f} ms, "
            f"{rows[-1][3]:.1f} tokens/s ({total} tokens in {wall:.2f} s), peak {peak:.2f} GiB")
    b = rows[0]
    log(f"\n{'sessions':>8} {'first token p50':>16} {'max':>9} {'tokens/s':>9} {'x vs 1':>7} {'peak GiB':>9}")
    for n, f, fmax, tps, _, peak in rows:
        log(f"{n:>8} {f * 1000:>13.1f} ms {fmax * 1000:>6.0f} ms {tps:>9.1f} {tps / b[3]:>7.2f} {peak:>9.2f}")
    log(f"batch sizes seen (size: steps): {dict(sorted(engine.metrics.batch_sizes.items()))}")
    return rows


async def _speech_turn(engine, i: int, tokens: int):
    req = Request((Message("user", f"Question {i}: what should I cook tonight?"),), max_new_tokens=tokens, seed=i)
    t0 = time.perf_counter()
    first = None
    chunks = 0
    async for ev in engine.stream(req):
        if isinstance(ev, AudioChunk):
            chunks += 1
            if first is None:
                first = time.perf_counter() - t0
        if isinstance(ev, Done):
            return first, ev.timings.audio_s, ev.timings.total_s, ev.timings.first_text_s, chunks
        if not isinstance(ev, TextDelta | AudioChunk):
            raise RuntimeError(f"turn {i} failed: {ev}")
    raise RuntimeError(f"turn {i} ended without Done")


def bench_speech(engine, turns, tokens, concurrent, device, log, label=""):
    async def go():
        out = []
        for r in range(0, turns, concurrent):
            t0 = time.perf_counter()
            res = await asyncio.gather(*(_speech_turn(engine, r + j, tokens) for j in range(concurrent)))
            wall = time.perf_counter() - t0
            out += [(*x, wall) for x in res]
        return out

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rows = asyncio.run(go())
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    firsts = [r[0] for r in rows]
    rt = [r[1] / r[2] for r in rows]
    audio = sum(r[1] for r in rows)
    rounds_wall = sum(rows[i][5] for i in range(0, len(rows), concurrent))
    log(f"speech{label}: {turns} turns, {concurrent} at a time, {tokens}-token replies: first audio p50 "
        f"{pct(firsts, 0.5) * 1000:.0f} ms p95 {pct(firsts, 0.95) * 1000:.0f} ms (min {min(firsts) * 1000:.0f}, "
        f"max {max(firsts) * 1000:.0f}); first text p50 {pct([r[3] for r in rows], 0.5) * 1000:.0f} ms; "
        f"audio per turn {statistics.mean(r[1] for r in rows):.2f} s in {statistics.mean(r[4] for r in rows):.1f} "
        f"chunks; audio s / wall s per turn: mean {statistics.mean(rt):.2f} min {min(rt):.2f}; aggregate "
        f"{audio / rounds_wall:.2f} audio s per wall s; peak {peak:.2f} GiB")
    return rows


class Breakdown:
    """Wall time per model stage (the GPU synchronised around each call), patched in for one pass."""

    def __init__(self, device: str, sync: bool = True) -> None:
        self.device = device if sync else "cpu"  # without sync: wall time as the engine sees it
        self.times: dict[str, list[float]] = {}
        self.undo: list = []

    def wrap(self, owner, name: str, label: str) -> None:
        fn = getattr(owner, name)

        def timed(*a, **k):
            _sync(self.device)
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                _sync(self.device)
                self.times.setdefault(label, []).append(time.perf_counter() - t0)

        setattr(owner, name, timed)
        self.undo.append((owner, name, fn))

    def install(self, arch: str) -> None:
        from assistant.backends import omni, speech3, speech25

        self.wrap(omni.OmniBackend, "start", "prefill (thinker, one turn)")
        self.wrap(omni.OmniBackend, "_decode_step", "thinker decode step (batched) + sampling")
        if arch == "qwen2_5_omni":
            self.wrap(speech25.Talker25, "start", "talker prefill")
            self.wrap(speech25.Talker25, "step", "talker step (1 code)")
            self.wrap(speech25.Token2WavStream, "_sample", "DiT ODE (one chunk window)")
            self.wrap(speech25.Token2WavStream, "_vocode", "BigVGAN (one chunk)")
        else:
            self.wrap(speech3.Talker3, "start", "talker prefill")
            self.wrap(speech3.Talker3, "step", "talker step (1 frame, all codebooks)")
            self.wrap(speech3.Code2WavStream, "pull", "Code2Wav pull")

    def install_engine(self) -> None:
        """Where the engine thread's time goes (no GPU sync: the step's own transfers wait for it)."""
        from assistant.backends import batching, omni, speech25

        self.wrap(Engine, "_admit", "engine: admit (incl. prefill)")
        self.wrap(Engine, "_step", "engine: step (backend + deliver)")
        self.wrap(Engine, "_deliver_pending", "engine: deliver one turn's events")
        self.wrap(omni.OmniBackend, "_decode_step", "backend: thinker decode step")
        self.wrap(omni.OmniBackend, "_take", "backend: take one token (decode text)")
        self.wrap(batching.KVBatch, "sync", "backend: KV batch sync")
        self.wrap(speech25.Talker25, "_accept", "talker: sample one code (CPU)")

    def report(self, log) -> None:
        for owner, name, fn in reversed(self.undo):
            setattr(owner, name, fn)
        log(f"{'stage':>44} {'calls':>6} {'mean ms':>8} {'total s':>8}")
        for label, ts in self.times.items():
            log(f"{label:>44} {len(ts):>6} {statistics.mean(ts) * 1000:>8.2f} {sum(ts):>8.2f}")
        self.times = {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="qwen2_5_omni", choices=list(ARCHS))
    ap.add_argument("--size", default="full", choices=["full", "small"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--engine", action="store_true", help="text-only throughput at --sessions")
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--speech", action="store_true", help="first audio and real-time factor")
    ap.add_argument("--speech-turns", type=int, default=10)
    ap.add_argument("--speech-tokens", type=int, default=16)
    ap.add_argument("--concurrent", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--one-shot", action="store_true", help="also speech decoded once at the end")
    ap.add_argument("--breakdown", action="store_true",
                    help="last: time each stage (synchronised) over one spoken turn and one text batch")
    ap.add_argument("--diagnose", action="store_true", help="where the engine thread's wall time goes")
    ap.add_argument("--log", default=None, help="also append the report to this file")
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    def log(msg: str) -> None:
        print(msg, flush=True)
        if args.log:
            with open(args.log, "a") as f:
                f.write(msg + "\n")

    if args.device.startswith("cuda"):
        log(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}")
    import transformers

    log(f"transformers {transformers.__version__}")
    model, processor, spec = build(args.arch, args.size, args.device, getattr(torch, args.dtype), log)
    max_batch = max([*args.sessions, *args.concurrent])
    engine = make_engine(model, processor, spec, args.device, max_batch)
    try:
        if args.engine:
            log(f"\n== engine: {args.arch} {args.size}, text only, {args.tokens}-token replies, {args.rounds} rounds")
            bench_engine(engine, args.sessions, args.tokens, args.rounds, args.device, log)
        if args.speech:
            log(f"\n== speech: {args.arch} {args.size}, streamed")
            asyncio.run(_speech_turn(engine, 999, 4))  # warm-up: talker, vocoder kernels
            for c in args.concurrent:
                bench_speech(engine, max(args.speech_turns, c) if c == 1 else c, args.speech_tokens, c,
                             args.device, log)
            if args.one_shot:
                engine.backend.stream_speech = False
                log("\n== speech: one-shot (whole utterance decoded after the talker finishes)")
                bench_speech(engine, min(args.speech_turns, 4), args.speech_tokens, 1, args.device, log, " one-shot")
        if args.diagnose:
            asyncio.run(_gather_text(engine, 2, 4))  # warm-up
            bd = Breakdown(args.device, sync=False)
            bd.install_engine()
            for n in (8, 16):
                t0 = time.perf_counter()
                rows = asyncio.run(_gather_text(engine, n, 64))
                log(f"\n== diagnose: {n} text sessions, 64-token replies: round {time.perf_counter() - t0:.2f} s, "
                    f"{sum(r[1] for r in rows)} tokens")
                bd.report(log)
                bd.install_engine()
            t0 = time.perf_counter()
            asyncio.run(_speech_turn(engine, 1001, 4))
            log(f"\n== diagnose: one spoken turn, 4-token reply: {time.perf_counter() - t0:.2f} s")
            bd.report(log)
            if args.arch == "qwen2_5_omni":
                bd = Breakdown(args.device)
                bd.wrap(type(model.talker), "forward", "talker forward (synced)")
                asyncio.run(_speech_turn(engine, 1002, 4))
                bd.report(log)
        if args.breakdown:
            bd = Breakdown(args.device)
            bd.install(args.arch)
            log(f"\n== breakdown: one spoken turn ({args.speech_tokens}-token reply), alone")
            asyncio.run(_speech_turn(engine, 1000, args.speech_tokens))
            bd.report(log)
            n = max(args.sessions)
            log(f"\n== breakdown: {n} text sessions at once, 32-token replies")
            bd.install(args.arch)

            async def batch():
                await asyncio.gather(*(_text_turn(engine, i, 32) for i in range(n)))

            asyncio.run(batch())
            bd.report(log)
    finally:
        engine.close()
        log(f"engine metrics: done {engine.metrics.turns_done}, failed {engine.metrics.turns_failed}")


if __name__ == "__main__":
    main()
