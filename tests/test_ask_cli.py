"""`assistant ask` end to end in a subprocess, as a user runs it: outputs, exit codes, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def ask(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assistant", "ask", "--profile", "tiny", "--max-new-tokens", "8",
                           *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("assistant: error: ")
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]


def test_hello_writes_a_24khz_wav(tmp_path):
    out = tmp_path / "x.wav"
    proc = ask("hello", "--speak", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()  # the text answer
    with wave.open(str(out)) as w:
        assert w.getframerate() == 24_000 and w.getnchannels() == 1 and w.getnframes() > 0


def test_speech_image_and_text_in_one_turn_json(tmp_path, speech_dir):
    img = tmp_path / "some.png"
    Image.new("RGB", (320, 240), (20, 160, 40)).save(img)
    proc = ask("--audio", str(speech_dir / "openai_whisper" / "jfk.flac"), "--image", str(img), "--json",
               "--speak", str(tmp_path / "a.wav"), "describe")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "done" and "textdelta" in kinds and "audio" in kinds
    done = events[-1]
    assert done["prompt_tokens"] > 100  # 11 s of speech and an image
    t = done["timings"]
    assert 0 < t["first_text_s"] <= t["first_audio_s"] <= t["total_s"]


@pytest.fixture()
def bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    files["empty.wav"] = tmp_path / "empty.wav"
    files["empty.wav"].write_bytes(b"")
    files["text.mp3"] = tmp_path / "text.mp3"
    files["text.mp3"].write_text("this is not audio at all\n" * 50)
    files["garbage.flac"] = tmp_path / "garbage.flac"
    files["garbage.flac"].write_bytes(b"fLaC" + np.random.default_rng(0).bytes(4000))
    files["notimage.png"] = tmp_path / "notimage.png"
    files["notimage.png"].write_text("hello")
    files["huge.png"] = tmp_path / "huge.png"
    Image.new("1", (20_000, 20_000)).save(files["huge.png"])  # 400 megapixels, small file
    files["bomb.png"] = tmp_path / "bomb.png"
    Image.new("L", (30_000, 30_000)).save(files["bomb.png"], optimize=True)
    return files


@pytest.mark.parametrize(("flag", "name", "words"), [
    ("--audio", "empty.wav", ["empty"]),
    ("--audio", "text.mp3", ["audio"]),
    ("--audio", "garbage.flac", ["audio"]),
    ("--audio", "missing.wav", ["not found"]),
    ("--image", "notimage.png", ["image"]),
    ("--image", "missing.png", ["not found"]),
    ("--image", "huge.png", ["too large", "megapixels"]),
    ("--image", "bomb.png", ["too large", "megapixels"]),
])
def test_bad_input_is_one_line_exit_2(bad_files, tmp_path, flag, name, words):
    path = bad_files.get(name, tmp_path / name)
    proc = ask("what is this?", flag, str(path))
    assert_one_line_error(proc, 2, *words)


def test_empty_turn_is_refused():
    assert_one_line_error(ask(""), 2, "empty")


def test_prompt_longer_than_context():
    proc = subprocess.run([sys.executable, "-m", "assistant", "ask", "--profile", "tiny", "-"],
                          input="word " * 40_000, capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc, 2, "context")


def test_unwritable_speak_path(tmp_path):
    assert_one_line_error(ask("hi", "--speak", str(tmp_path / "no" / "such" / "dir" / "x.wav")), 2, "folder")


def test_help_lists_every_option():
    proc = subprocess.run([sys.executable, "-m", "assistant", "ask", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for opt in ("--image", "--audio", "--speak", "--voice", "--json", "--profile", "--model"):
        assert opt in proc.stdout


def test_igor_across_processes(tmp_path):
    """Each `ask` is a new process on the same data dir: the correction is what persists."""
    data = ["--data-dir", str(tmp_path), "--user", "igor"]
    assert ask(*data, "My name is Egor.").returncode == 0
    assert ask(*data, "No, my name is Igor.").returncode == 0
    listing = subprocess.run([sys.executable, "-m", "assistant", "memory", "list", *data, "--json"],
                             capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert "Igor" in listing.stdout
    active = [m for m in json.loads(listing.stdout) if m.get("status", "active") == "active"]
    assert any("Igor" in m["text"] for m in active) and not any("Egor" in m["text"] for m in active)


def test_unknown_persona_fails_before_loading_the_model(tmp_path):
    proc = ask("--data-dir", str(tmp_path), "--persona", "Nobody", "hi")
    assert_one_line_error(proc, 2, "Nobody")
