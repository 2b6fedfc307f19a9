"""Decoding stops at the duration cap while it decodes: 10 h of silent FLAC with no duration in its
header (7 MB, 2.3 GB once decoded) is refused after a few seconds of work, in little memory."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def silence_10h(tmp_path_factory):
    path = tmp_path_factory.mktemp("caps") / "silence.flac"
    with path.open("wb") as out:  # written to a pipe: the header cannot say how long it is
        subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "36000",
                        "-c:a", "flac", "-f", "flac", "pipe:1"], stdout=out, check=True)
    return path


def test_decoding_stops_at_the_cap_in_bounded_memory(silence_10h):
    code = (
        "import re, sys\n"
        "from audio.io import AudioTooLong, load_audio, probe_audio\n"
        "assert probe_audio(sys.argv[1]).duration_s is None\n"
        "try:\n    load_audio(open(sys.argv[1], 'rb').read())\nexcept AudioTooLong as e:\n    print(e.message)\n"
        # VmHWM, not getrusage's ru_maxrss: that keeps the parent's peak across fork and exec (a test
        # process of 1.4 GB read as 1458 MiB here in a full run)
        "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]) // 1024)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(silence_10h)], capture_output=True, text=True, timeout=120)
    message, peak_mib = r.stdout.strip().splitlines()
    assert "longer than 5 min" in message
    assert int(peak_mib) < 600  # the whole file would be 2.3 GB of float32


def test_a_file_may_be_longer_and_streams_in_windows(silence_10h):
    from audio.io import AudioTooLong, stream_audio

    windows = 0
    with pytest.raises(AudioTooLong, match="4 h"):
        for window in stream_audio(silence_10h, window_s=60.0):
            assert len(window) <= 60 * 16_000
            windows += 1
    assert windows >= 239  # all of the first 4 h came out, one window at a time


def test_a_header_over_the_cap_is_refused_before_decoding(tmp_path):
    from audio.io import AudioTooLong, load_audio

    path = tmp_path / "long.flac"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "400",
                    str(path)], check=True)
    with pytest.raises(AudioTooLong, match=r"long\.flac"):
        load_audio(path)
    assert len(load_audio(path, max_duration_s=500)) == 400 * 16_000
