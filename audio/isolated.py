"""`TranscriberProcess`: `audio.transcribe` run in a child process, for servers that also run torch.

Once CTranslate2 (faster-whisper) has run in a process, torch's small parallel kernels there stay
slower for the life of the process (both bring their own OpenMP runtime): after one file
transcription the offline LLM's decode steps went from 38 to 56-61 ms. A server therefore
transcribes in a child process (`python -m audio.isolated`), started at the first file and kept
for the next ones (its model stays loaded). Requests and replies are pickled frames on its
stdin/stdout; progress reports come back while a file is decoded. One file at a time; a child that
died is started again by the next call, and the call it was serving gets a ModelError.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import BinaryIO, NoReturn

from assistant import errors
from assistant.errors import AssistantError, ModelError

__all__ = ["ChildProcess", "TranscriberProcess", "child_streams", "start_child", "stop_child"]

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("<Q")
_STOP_TIMEOUT_S = 5.0


def _frame(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def _send(stream: BinaryIO, message: object) -> None:
    stream.write(_frame(message))
    stream.flush()


def _receive(stream: BinaryIO) -> object | None:
    """The next message, or None when the other side has gone."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)  # frames come only from our own child process


class ChildProcess:
    """A `python -m MODULE` child that serves one request at a time on its stdin/stdout: started
    on demand (or by the subclass), started again by the next request after it died. Subclasses
    give MODULE, WHAT (named in errors) and the wire format; `_started` may check the new child."""

    MODULE = ""
    WHAT = "child"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: subprocess.Popen | None = None
        self._stop = None

    @property
    def pid(self) -> int | None:
        """The child's process id, None before it was started (or after close)."""
        return self._child.pid if self._child is not None else None

    def _args(self) -> tuple[str, ...]:
        return ()

    def _start(self) -> None:
        child = start_child(self.MODULE, *self._args())
        self._child = child
        self._stop = weakref.finalize(self, stop_child, child)
        self._started()
        log.info("%s runs in process %d", self.WHAT, child.pid)

    def _started(self) -> None:
        """Called after each start, with the lock held."""

    def _request(self, data: bytes) -> None:
        """Send one request (with the lock held), starting a child first if there is none alive."""
        if self._child is None or self._child.poll() is not None:
            self._start()
        try:
            self._write(data)
        except OSError:  # it died before taking the request (poll had not seen it yet): a new one
            self._child.wait()
            self._start()
            self._write(data)

    def _write(self, data: bytes) -> None:
        self._child.stdin.write(data)
        self._child.stdin.flush()

    def _died(self, after: str) -> NoReturn:
        """The child went away mid-request: reap it and raise a ModelError (`after`: what now)."""
        child, self._child = self._child, None
        code = None
        if child is not None:
            try:
                code = child.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                code = child.wait()
        raise ModelError(f"the {self.WHAT} process stopped (exit code {code}); {after}")

    def close(self) -> None:
        with self._lock:
            if self._stop is not None:
                self._stop()
            self._child = None


class TranscriberProcess(ChildProcess):
    """`transcribe(source, progress=None, **options)` as `audio.transcribe`, in a child process."""

    MODULE = "audio.isolated"
    WHAT = "file transcription"

    def transcribe(self, source, progress=None, **options):
        """Transcribe `source` (a path, bytes or a binary file) with `audio.transcribe`'s options;
        `progress` is called here with each Progress the child reports."""
        if not isinstance(source, str | bytes | os.PathLike):
            source = source.read()
        elif not isinstance(source, bytes):
            source = os.fspath(source)
        with self._lock:
            self._request(_frame((source, options)))
            while True:
                message = _receive(self._child.stdout)
                if message is None:
                    self._died("try again")
                kind, payload = message
                if kind == "progress":
                    if progress is not None:
                        progress(payload)
                elif kind == "done":
                    return payload
                else:
                    name, text = payload
                    cls = getattr(errors, name, None)
                    raise (cls if isinstance(cls, type) and issubclass(cls, AssistantError) else ModelError)(text)


def start_child(module: str, *args: str) -> subprocess.Popen:
    """`python -m module args` with pipes on its stdin and stdout (its stderr is ours)."""
    root = str(Path(__file__).resolve().parents[1])  # the checkout, for runs that did not install it
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    # numpy's OpenBLAS threads spin on the cores for a while after each product (the log-mel filter
    # bank): CTranslate2's encoder starting right after them took 0.18 s instead of 0.13 s on 2 cores
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return subprocess.Popen([sys.executable, "-m", module, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=env)  # fmt: skip


def stop_child(child: subprocess.Popen) -> None:
    """End a child: closing its input ends its loop; kill it if it does not go."""
    try:
        child.stdin.close()
    except OSError:
        pass
    try:
        child.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    child.stdout.close()


def child_streams() -> tuple[BinaryIO, BinaryIO]:
    """In a child: (its requests, where its replies go). Its stdout is kept for the replies alone:
    stray prints (ours or a library's) go to stderr from now on."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return sys.stdin.buffer, out


def _serve() -> int:
    """The child's loop: (source, options) in, progress reports and a Transcript (or an error) out."""
    requests, out = child_streams()
    from audio.transcription import transcribe

    while True:
        message = _receive(requests)
        if message is None:
            return 0  # the parent closed the pipe or went away
        source, options = message
        try:
            result = transcribe(source, progress=lambda p: _send(out, ("progress", p)), **options)
            _send(out, ("done", result))
        except AssistantError as err:
            # the nearest class the parent knows (assistant.errors): AudioTooLong travels as BadInput
            known = next(c for c in type(err).__mro__ if getattr(errors, c.__name__, None) is c)
            _send(out, ("error", (known.__name__, err.message)))
        except Exception as err:  # one file fails, the process goes on
            log.exception("transcription failed")
            _send(out, ("error", ("ModelError", f"transcription failed: {type(err).__name__}: {err}")))


if __name__ == "__main__":
    sys.exit(_serve())
