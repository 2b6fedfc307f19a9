"""Who spoke when: real speech of 2 and 3 different people joined into one mono recording, labelled
right up to renaming, in every output format, over the CLI and the API; bad counts and speechless
audio. The clips are in tests/data/diarize (sources in tests/data/README.md)."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import srt
import webvtt

from assistant.errors import BadInput
from audio import transcribe
from audio.diarize import Diarization, rename_speakers, speaker_turns
from audio.formats import render
from audio.io import load_audio, write_wav

DATA = Path(__file__).resolve().parent / "data" / "diarize"
REPO = Path(__file__).resolve().parents[1]
SR = 16_000
LABEL = re.compile(r"SPEAKER_\d\d")
KEY = "sk-diarize-test"


def assemble(path: Path, parts: list[tuple[str, float, float | None]]) -> tuple[Path, list[tuple[float, float, str]]]:
    """Join (clip, from_s, to_s) pieces with 0.4 s pauses into a mono WAV; the turns, as (start, end, clip)."""
    gap = np.zeros(int(0.4 * SR), np.float32)
    pieces, turns, t = [], [], 0.0
    for name, start, end in parts:
        pcm = load_audio(DATA / f"{name}.flac")[int(start * SR) : None if end is None else int(end * SR)]
        pieces += [pcm, gap]
        turns.append((t, t + len(pcm) / SR, name))
        t += (len(pcm) + len(gap)) / SR
    write_wav(path, np.concatenate(pieces), SR)
    return path, turns


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """JFK, then another man (LibriSpeech), then JFK again."""
    return assemble(tmp_path_factory.mktemp("two") / "two.wav",
                    [("jfk", 0, 2.8), ("librispeech_left", 0, None), ("jfk", 5.0, None)])


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """JFK, two LibriSpeech readers, JFK again."""
    return assemble(tmp_path_factory.mktemp("three") / "meeting.wav",
                    [("jfk", 0, 2.8), ("librispeech_left", 0, None), ("librispeech_right", 0, 3.0), ("jfk", 5.0, None)])


def speaker_of(turns, start: float, end: float) -> str | None:
    """The hypothesis speaker covering most of [start, end]."""
    cover: dict[str, float] = {}
    for t in turns:
        cover[t.speaker] = cover.get(t.speaker, 0.0) + max(0.0, min(end, t.end) - max(start, t.start))
    return max(cover, key=cover.__getitem__) if cover and max(cover.values()) > 0 else None


def assert_same_partition(reference, labels: list[str | None]) -> None:
    """Reference turn i has labels[i]: the same person always gets the same label, different people
    different labels (up to renaming)."""
    mapping: dict[str, str | None] = {}
    for (_, _, who), label in zip(reference, labels, strict=True):
        assert label is not None
        assert mapping.setdefault(who, label) == label, (reference, labels)
    assert len(set(mapping.values())) == len(mapping), (reference, labels)


@pytest.mark.parametrize("fixture", ["two", "three"])
def test_speakers_labelled_right_up_to_renaming(fixture, request) -> None:
    path, reference = request.getfixturevalue(fixture)
    turns = speaker_turns(path, Diarization())
    assert len({t.speaker for t in turns}) == len({who for *_, who in reference})  # the count, estimated
    assert all(LABEL.fullmatch(t.speaker) for t in turns)
    assert_same_partition(reference, [speaker_of(turns, s, e) for s, e, _ in reference])
    labelled = sum(min(e, t.end) - max(s, t.start) for s, e, _ in reference for t in turns
                   if t.speaker == speaker_of(turns, s, e) and min(e, t.end) > max(s, t.start))
    speech = sum(e - s for s, e, _ in reference)
    assert labelled > 0.8 * speech  # most of each turn is its speaker's (pauses inside turns aside)


def test_count_given_and_too_many(two) -> None:
    path, reference = two
    turns = speaker_turns(path, Diarization(speakers=2))
    assert_same_partition(reference, [speaker_of(turns, s, e) for s, e, _ in reference])
    many = speaker_turns(path, Diarization(speakers=12))  # more than there is speech for: no crash
    assert 2 <= len({t.speaker for t in many}) <= 12
    bounded = speaker_turns(path, Diarization(min_speakers=1, max_speakers=1))
    assert {t.speaker for t in bounded} == {"SPEAKER_00"}


def test_one_speaker_is_one_speaker() -> None:
    turns = speaker_turns(DATA / "jfk.flac", Diarization())
    assert turns and {t.speaker for t in turns} == {"SPEAKER_00"}


def test_silence_and_music_have_no_speaker_turns(tmp_path) -> None:
    silence = write_wav(tmp_path / "silence.wav", np.zeros(5 * SR, np.float32), SR)
    assert speaker_turns(silence, Diarization()) == []
    t = np.arange(8 * SR) / SR
    notes = 220 * 2 ** (np.array([0, 4, 7, 12, 7, 4, 0, 5]) / 12)  # an arpeggio, one note a second
    f = notes[(t // 1).astype(int)]
    music = sum(np.sin(2 * np.pi * k * f * t) / k for k in (1, 2, 3)) * np.exp(-2 * (t % 1)) * 0.3
    path = write_wav(tmp_path / "music.wav", music.astype(np.float32), SR)
    transcript = transcribe(path, diarize=Diarization())
    assert not any(s.speaker for s in transcript.segments)


def test_bad_counts_are_clear_errors(two) -> None:
    for bad in ({"speakers": 0}, {"speakers": -1}, {"min_speakers": 3, "max_speakers": 2}, {"max_speakers": 99}):
        with pytest.raises(BadInput):
            Diarization(**bad)
    for args in (["--diarize", "--speakers", "0"], ["--speakers", "2"], ["--diarize", "--speakers", "2",
                 "--max-speakers", "3"], ["--diarize", "--split-channels"]):
        out = subprocess.run([sys.executable, "-m", "assistant", "transcribe", str(two[0]), *args, "--no-progress"],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
        assert out.returncode == 2, (args, out.stderr)
        err = [line for line in out.stderr.splitlines() if line.startswith("assistant: error")]
        assert len(err) == 1 and "Traceback" not in out.stderr, out.stderr


def test_every_format_carries_the_speakers(three, tmp_path) -> None:
    path, reference = three
    out = subprocess.run([sys.executable, "-m", "assistant", "transcribe", str(path), "--diarize", "--format", "all",
                          "-o", str(tmp_path), "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "meeting.json").read_text())
    segments = data["segments"]
    assert segments and all(LABEL.fullmatch(s["speaker"]) for s in segments)
    words = [w for s in segments for w in s["words"]]
    assert words and all(w["speaker"] == s["speaker"] for s in segments for w in s["words"])  # never split
    # The words of each reference turn that was transcribed carry that turn's speaker.
    heard = [(s, e, who) for s, e, who in reference if any(s <= (w["start"] + w["end"]) / 2 <= e for w in words)]
    assert len(heard) >= 3
    labels = []
    for s, e, _ in heard:
        inside = [w["speaker"] for w in words if s <= (w["start"] + w["end"]) / 2 <= e]
        labels.append(max(set(inside), key=inside.count))
        assert inside.count(labels[-1]) >= 0.8 * len(inside)
    assert_same_partition(heard, labels)
    assert len({s["speaker"] for s in segments}) == 3

    subs = list(srt.parse((tmp_path / "meeting.srt").read_text()))
    assert len(subs) == len(segments) and all(re.match(r"\[SPEAKER_\d\d\] ", s.content) for s in subs)
    captions = webvtt.read(str(tmp_path / "meeting.vtt")).captions
    assert [c.voice for c in captions] == [s["speaker"] for s in segments]
    paragraphs = (tmp_path / "meeting.txt").read_text().strip().split("\n\n")
    heads = [re.match(r"\[(SPEAKER_\d\d)\] \S", p).group(1) for p in paragraphs]
    assert len(heads) >= 3 and all(a != b for a, b in itertools.pairwise(heads))  # a new one per change
    rows = [r.split("\t") for r in (tmp_path / "meeting.tsv").read_text().splitlines()]
    assert rows[0] == ["start", "end", "speaker", "text"]
    assert [r[2] for r in rows[1:]] == [s["speaker"] for s in segments]


def test_renamed_speakers_in_the_files(two) -> None:
    t = transcribe(two[0], diarize=Diarization(speakers=2))
    renamed = rename_speakers(t, {"SPEAKER_00": "Ann <x>", "SPEAKER_01": "  "})
    assert {s.speaker for s in renamed.segments} == {"Ann x", "SPEAKER_01"}
    assert all(w.speaker == s.speaker for s in renamed.segments for w in s.words)
    assert "[Ann x] " in render(renamed, "srt") and "<v Ann x>" in render(renamed, "vtt")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    import openai
    from conftest import start_server, stop_server

    data = str(tmp_path_factory.mktemp("api-data"))
    proc, url = start_server("--profile", "tiny", "--data-dir", data, "--api-key", f"{KEY}=alice")
    yield openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=300), url
    stop_server(proc)


def test_api_diarize_field(api, two) -> None:
    import httpx

    client, url = api
    with open(two[0], "rb") as f:
        v = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                               timestamp_granularities=["word", "segment"],
                                               extra_body={"diarize": "true"})
    segments = [s.model_dump() for s in v.segments]
    assert segments and all(LABEL.fullmatch(s["speaker"]) for s in segments)
    assert len({s["speaker"] for s in segments}) == 2
    assert all(LABEL.fullmatch(w.model_dump()["speaker"]) for w in v.words)
    with open(two[0], "rb") as f:
        plain = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json")
    assert all("speaker" not in s.model_dump() or s.model_dump()["speaker"] is None for s in plain.segments)
    for bad in ({"diarize": "maybe"}, {"diarize": "true", "speakers": "0"}, {"diarize": "true", "speakers": "two"}):
        r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", two[0].read_bytes())},
                       data=bad, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
        assert r.status_code == 400 and r.json()["error"]["message"], (bad, r.text)
