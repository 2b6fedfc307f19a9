"""`assistant talk`: speak with the assistant through the microphone and speakers."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import os
import signal
import sys

__all__ = ["add_parser", "run"]

ECHO_HELP = ("Without headphones the assistant hears itself; by default the speech threshold rises "
             "while it speaks (echo-safe), so talk a little louder to cut it off. With headphones use "
             "--headphones for the most sensitive barge-in; in a loud room use --push-to-talk.")


def add_parser(sub, parents) -> None:
    p = sub.add_parser("talk", parents=parents, help="talk with it through the microphone",
                       description="A spoken conversation: it hears when you start and stop, answers "
                                   "aloud, and stops talking when you talk. Ctrl+C ends it; it is saved.",
                       epilog=ECHO_HELP)
    p.add_argument("--list-devices", action="store_true", help="list sound devices and exit")
    p.add_argument("--input-device", help="microphone: index or (part of a) name (default: the system's)")
    p.add_argument("--output-device", help="speaker: index or (part of a) name (default: the system's)")
    p.add_argument("--server", metavar="URL", help="talk to a running `assistant serve` (e.g. http://127.0.0.1:7860)")
    p.add_argument("--api-key", help="the server's key (default: $ASSISTANT_API_KEY)")
    p.add_argument("--push-to-talk", action="store_true",
                   help="press Enter to start talking and Enter again to send (no automatic end of turn)")
    p.add_argument("--headphones", action="store_true",
                   help="no echo guard: the most sensitive barge-in (only with headphones)")
    p.add_argument("--silence", type=float, default=0.7, metavar="SECONDS",
                   help="silence that ends your turn (default 0.7)")
    p.add_argument("--prepare-after", type=float, default=0.1, metavar="SECONDS",
                   help="silence after which the reply starts being prepared, held back until the turn "
                        "ends (default 0.1; the same as --silence: only once the turn has ended)")
    p.add_argument("--vad", choices=["webrtc", "silero"], default="webrtc",
                   help="speech detector: webrtcvad (default), or Silero VAD (a neural model bundled with "
                        "faster-whisper: far fewer false turns from noise, music and clatter)")
    p.add_argument("--vad-aggressiveness", type=int, choices=[0, 1, 2, 3], default=2,
                   help="webrtcvad: 0 keeps most sound as speech, 3 is strictest (default 2)")
    p.add_argument("--min-speech", type=float, default=0.25, metavar="SECONDS",
                   help="shorter sounds (a cough, a click) are not turns (default 0.25)")
    p.add_argument("--threshold-db", type=float, default=-45.0, help="quietest speech level in dBFS (default -45)")
    p.add_argument("--echo-threshold-db", type=float, default=-35.0,
                   help="speech level needed while the assistant speaks, in dBFS (default -35)")
    p.add_argument("--voice", help="a voice of the core model (default: the persona's)")
    p.add_argument("--text-only", action="store_true", help="answer in text only (no speech)")
    p.add_argument("--instance", help="which conversation of this persona to continue (default: the main one)")
    p.add_argument("--record-input", metavar="FILE.wav", help="also save what the microphone heard (16 kHz WAV)")
    p.add_argument("--json", action="store_true", help="one JSON event per line on stdout (for programs)")
    p.add_argument("--model", help="hub id or local path of the core model (in process)")
    p.add_argument("--architecture", choices=["qwen2_5_omni", "qwen3_omni"], default="qwen2_5_omni",
                   help="for --profile tiny: which architecture to build")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest reply, in tokens")
    p.set_defaults(run=run)


def _options(args: argparse.Namespace):
    from assistant.errors import BadInput
    from assistant.talk import TalkOptions
    from audio.devices import resolve_device
    from audio.endpoint import EndpointConfig

    try:
        endpoint = EndpointConfig(detector=args.vad, aggressiveness=args.vad_aggressiveness, silence_s=args.silence,
                                  prepare_s=args.prepare_after,
                                  min_speech_s=args.min_speech, threshold_db=args.threshold_db,
                                  echo_threshold_db=None if args.headphones else args.echo_threshold_db)
    except ValueError as err:
        raise BadInput(str(err)) from err
    return TalkOptions(input_device=resolve_device(args.input_device, "input"),
                       output_device=resolve_device(args.output_device, "output"),
                       push_to_talk=args.push_to_talk, json_events=args.json, endpoint=endpoint,
                       voice=args.voice, speak=not args.text_only, record_input=args.record_input)


def _list_devices() -> int:
    from audio.devices import list_devices

    devices = list_devices()
    if not devices:
        print("no sound devices found", file=sys.stderr)
        return 1
    for d in devices:
        marks = ("  default input" if d["default_input"] else "") + ("  default output" if d["default_output"] else "")
        print(f"{d['index']:3d}  {d['name']}  (in {d['inputs']}, out {d['outputs']}){marks}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list_devices:
        return _list_devices()
    options = _options(args)  # bad devices and settings fail before any model loads
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>` prints every thread's stack: what a hang waits on
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    from assistant.talk import RemoteLink, TalkLoop

    if args.server:
        from assistant.realtime import realtime_url

        url = realtime_url(args.server, persona=args.persona, voice=args.voice, instance=args.instance)
        link = RemoteLink(url, args.api_key or os.environ.get("ASSISTANT_API_KEY"), options)
        return asyncio.run(TalkLoop(link, options).run())

    from assistant.config import EngineConfig, default_data_dir, resolve_profile
    from assistant.engine import load_engine
    from assistant.session import Session, default_user
    from assistant.talk import LocalLink
    from memory import open_store

    store = open_store(args.data_dir or default_data_dir(), database=args.database)
    try:
        session_args = dict(user=args.user or default_user(), persona_name=args.persona,
                            instance_name=args.instance, max_new_tokens=args.max_new_tokens)
        Session(None, store, **session_args)  # unknown persona: fail before loading the model
        if not args.json:
            print("loading the model…", file=sys.stderr, flush=True)
        engine = load_engine(EngineConfig(profile=resolve_profile(args.profile), model=args.model,
                                          architecture=args.architecture, device=args.device,
                                          max_new_tokens=args.max_new_tokens))
        try:
            link = LocalLink(Session(engine, store, **session_args), options)
            return asyncio.run(TalkLoop(link, options).run())
        finally:
            engine.close()
    finally:
        store.close()
