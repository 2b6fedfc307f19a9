"""A throwaway PostgreSQL 16 + pgvector server for tests and local use, from the `pgserver` wheel.

pgserver's own start-up runs `useradd` when started as root; this runs its bundled initdb and
pg_ctl directly instead, as `nobody` when we are root (PostgreSQL refuses to run as root), in a
temporary folder owned by that user, listening on a Unix socket only, removed by `stop`.

    with LocalPostgres() as pg:
        store = open_store(data_dir, database=pg.url)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from assistant.errors import BadInput

__all__ = ["LocalPostgres"]

NOBODY_UID = 65534  # Debian's `nobody` / `nogroup`
START_TIMEOUT_S = 60


def _bin_dir(uid: int | None) -> Path:
    """pgserver's bin folder; for another user, a copy it can read (site-packages may sit under a
    home folder only root can enter, such as /root), made once per pgserver install."""
    try:
        import pgserver
    except ImportError as err:
        raise BadInput("a local PostgreSQL needs pgserver: pip install pgserver") from err
    install = Path(pgserver.__file__).parent / "pginstall"
    if uid is None or _readable_by_others(install):
        return install / "bin"
    copy = Path(tempfile.gettempdir()) / f"assistant-pginstall-{install.stat().st_mtime_ns}"
    if not copy.exists():
        staging = Path(tempfile.mkdtemp(prefix="assistant-pginstall-"))
        shutil.copytree(install, staging / "pgserver" / "pginstall", symlinks=True)
        libs = install.parent.parent / "pgserver.libs"  # the binaries' rpath: $ORIGIN/../../../pgserver.libs
        if libs.is_dir():
            shutil.copytree(libs, staging / "pgserver.libs", symlinks=True)
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, copy)  # atomic: a concurrent copy loses the race and is removed
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return copy / "pgserver" / "pginstall" / "bin"


def _readable_by_others(path: Path) -> bool:
    return all(os.stat(p).st_mode & 0o005 == 0o005 for p in (path, *path.parents))


class LocalPostgres:
    """One PostgreSQL cluster in a temporary folder; `url` connects to its `postgres` database."""

    def __init__(self, uid: int = NOBODY_UID) -> None:
        self._uid = uid if os.geteuid() == 0 else None  # only root may (and must) switch user
        self._bin = _bin_dir(self._uid)
        self.folder = Path(tempfile.mkdtemp(prefix="assistant-pg-"))
        self.data = self.folder / "data"
        self.url = f"postgresql://postgres@/postgres?host={self.folder}"
        self._running = False

    def _preexec(self) -> None:
        os.setgid(self._uid)
        os.setuid(self._uid)

    def _run(self, *args: str) -> None:
        preexec = self._preexec if self._uid is not None else None
        done = subprocess.run(
            args, preexec_fn=preexec, capture_output=True, text=True, timeout=START_TIMEOUT_S, cwd=self.folder
        )
        if done.returncode != 0:
            raise BadInput(f"{Path(args[0]).name} failed: {(done.stderr or done.stdout).strip()[-500:]}")

    def start(self) -> LocalPostgres:
        """initdb (trust auth, user postgres) and start on a socket in the folder; returns self."""
        if self._uid is not None:
            os.chown(self.folder, self._uid, self._uid)
        os.chmod(self.folder, 0o755)  # the socket must be reachable by clients of other users
        self._run(str(self._bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8")  # fmt: skip
        options = f"-c listen_addresses='' -c unix_socket_directories={self.folder} -c fsync=off -c max_connections=200"
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
                  "-w", "-t", str(START_TIMEOUT_S), "start")  # fmt: skip
        self._running = True
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder."""
        try:
            if self._running:
                self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
                self._running = False
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database (empty, or a copy of `template`); returns its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url.replace("/postgres?", f"/{name}?")

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
