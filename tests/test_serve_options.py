"""Serve's options that keep secrets and mistakes in their place: API keys from a file or the
environment (not the command line, which `ps` shows), keys redacted from the access log, and a
--data-dir that is not a folder as a one-line error."""

from __future__ import annotations

import logging
import subprocess
import sys

import httpx

from tests.conftest import start_server, stop_server


def test_keys_from_a_file_and_from_the_environment(tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    keys.write_text("# the team\nfile-key-0123456=ann\n\n", encoding="utf-8")
    monkeypatch.setenv("ASSISTANT_API_KEYS", "env-key-0123456=bob, env-key-7777777")
    proc, url = start_server("--profile", "tiny", "--api-keys-file", str(keys), "--data-dir", str(tmp_path / "d"))
    try:
        for key in ("file-key-0123456", "env-key-0123456", "env-key-7777777"):
            assert httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer nope-nope-nope"}).status_code == 401
        assert "file-key" not in " ".join(proc.args)  # nothing secret on the command line
    finally:
        stop_server(proc)


def _assistant(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True, text=True, timeout=120)


def test_bad_key_files_and_data_dirs_are_one_line_errors(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    empty = tmp_path / "empty-keys"
    empty.write_text("# nothing\n")
    for args, words in [
        (("--data-dir", str(a_file), "memory", "list", "--user", "x"), "is a file"),
        (("--data-dir", str(a_file / "sub"), "persona", "list"), "cannot create the data dir"),
        (("serve", "--profile", "tiny", "--api-keys-file", str(tmp_path / "missing")), "cannot read the API keys"),
        (("serve", "--profile", "tiny", "--api-keys-file", str(empty)), "holds no keys"),
        (("serve", "--profile", "tiny", "--allow-origin", "evil.example"), "--allow-origin"),
    ]:
        r = _assistant(*args)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and words in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_keys_are_redacted_from_request_logs():
    from assistant.local_only import RedactKeys

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/v1/realtime?persona=a&api_key=secret-key-1", "1.1", 101),
                               None)
    RedactKeys().filter(record)
    line = record.getMessage()
    assert "secret-key-1" not in line and "api_key=***" in line and "persona=a" in line
