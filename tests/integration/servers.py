"""Throwaway PostgreSQL and Redis servers for integration tests.

Each server runs on a free port on 127.0.0.1 with its files in its own temporary
directory, and `stop()` kills it and removes that directory. PostgreSQL refuses to run
as root, so when the tests run as root its programs run as the `postgres` system user
(created by the Debian package) through `runuser`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql

STARTUP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin holding initdb and pg_ctl, or None."""
    found = []
    for bindir in glob.glob("/usr/lib/postgresql/*/bin"):
        path = Path(bindir)
        version = path.parent.name
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file() and version.isdigit():
            found.append((int(version), path))
    return max(found)[1] if found else None


def postgres_missing() -> str | None:
    """Why a PostgresServer cannot start on this machine, or None if it can."""
    if postgres_bindir() is None:
        return "PostgreSQL is not installed (no initdb/pg_ctl under /usr/lib/postgresql/*/bin)"
    return None


def redis_missing() -> str | None:
    """Why a RedisServer cannot start on this machine, or None if it can."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (not on PATH)"
    return None


def _fast_tempdir() -> str | None:
    """/dev/shm when it is a roomy writable tmpfs, else None (the default temp dir).

    Measured on an ext4 CI disk: CREATE DATABASE took ~0.3 s there and ~0.015 s on tmpfs.
    """
    shm = "/dev/shm"
    try:
        if os.path.isdir(shm) and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= 2**30:
            return shm
    except OSError:
        pass
    return None


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


class ServerError(RuntimeError):
    pass


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, trust auth on 127.0.0.1."""

    def __init__(self) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise ServerError(postgres_missing())
        self.bindir = bindir
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
            if runuser is None:
                raise ServerError("running as root but runuser is missing: cannot run PostgreSQL")
            self.as_postgres = [runuser, "-u", "postgres", "--"]
        self.port = 0
        self.dir: Path | None = None
        self.started = False

    @property
    def datadir(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    @property
    def logfile(self) -> Path:
        assert self.dir is not None
        return self.dir / "postgres.log"

    def _run(self, *args: str, timeout: float = STARTUP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.as_postgres, *args],
            cwd=self.dir,  # the postgres user may not be able to enter our working directory
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> PostgresServer:
        self.dir = Path(tempfile.mkdtemp(prefix="dpsynth-pg-", dir=_fast_tempdir()))
        if self.as_postgres:
            shutil.chown(self.dir, user="postgres", group="postgres")
        try:
            initdb = self._run(
                str(self.bindir / "initdb"),
                f"--pgdata={self.datadir}",
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )
            if initdb.returncode != 0:
                raise ServerError(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}{initdb.stderr}")
            self.port = free_port()
            settings = {
                "port": str(self.port),
                "listen_addresses": "'127.0.0.1'",
                "unix_socket_directories": f"'{self.dir}'",
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
            }
            with open(self.datadir / "postgresql.conf", "a") as conf:
                conf.write("\n# dpsynth test server\n")
                conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
            start = self._run(
                str(self.bindir / "pg_ctl"),
                f"--pgdata={self.datadir}",
                f"--log={self.logfile}",
                f"--timeout={int(STARTUP_TIMEOUT)}",
                "--wait",
                "start",
            )
            self.started = True
            if start.returncode != 0:
                raise ServerError(
                    f"pg_ctl start failed ({start.returncode}): {start.stdout}{start.stderr}\n"
                    f"postgres log tail:\n{_log_tail(self.logfile)}"
                )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"postgres on port {self.port} not ready after {STARTUP_TIMEOUT:.0f} s: {exc}\n"
                        f"postgres log tail:\n{_log_tail(self.logfile)}"
                    ) from exc
                time.sleep(0.1)

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string, for psycopg."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def url(self, dbname: str = "postgres") -> str:
        """A SQLAlchemy URL for database `dbname` (psycopg 3 driver)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its name (a fresh unique one by default)."""
        name = name or f"test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if conn.info.server_version >= 150000:
                # With fsync off, copying the template's files beats WAL-logging them.
                create = sql.SQL("{} STRATEGY FILE_COPY").format(create)
            conn.execute(create)
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, closing whatever connections are still open to it."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Kill the server (immediate mode) and remove its directory; safe to call twice."""
        if self.dir is None:
            return
        try:
            if self.started and (self.datadir / "postmaster.pid").exists():
                self._run(str(self.bindir / "pg_ctl"), f"--pgdata={self.datadir}", "--mode=immediate", "stop")
        finally:
            self.started = False
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    """A redis-server child process without persistence, on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise ServerError(redis_missing())
        self.executable = executable
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="dpsynth-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def logfile(self) -> Path:
        return self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if self.process is not None:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.executable,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
                *("--dir", str(self.dir), "--logfile", str(self.logfile), "--daemonize", "no"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._wait_ready()
        except BaseException:
            self._stop_process()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise ServerError(
                    f"redis-server exited with {self.process.returncode} on port {self.port}\n"
                    f"redis log tail:\n{_log_tail(self.logfile)}"
                )
            try:
                with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2) as client:
                    client.ping()
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"redis-server on port {self.port} not ready after {STARTUP_TIMEOUT:.0f} s: {exc}\n"
                        f"redis log tail:\n{_log_tail(self.logfile)}"
                    ) from exc
                time.sleep(0.05)

    def _stop_process(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port; everything stored is lost (no persistence)."""
        self._stop_process()
        self.start()

    def stop(self) -> None:
        """Stop the server and remove its directory; safe to call twice."""
        self._stop_process()
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.dir)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def unavailable(reason: str | None) -> None:
    """Skip for ``reason`` (a missing server or browser), or fail if DPSYNTH_REQUIRE_SERVERS is set.

    scripts/test.sh sets it, so in CI a missing server is an error, not a silent skip.
    """
    if reason is None:
        return
    if os.environ.get("DPSYNTH_REQUIRE_SERVERS"):
        pytest.fail(
            f"{reason}; DPSYNTH_REQUIRE_SERVERS is set (run scripts/system-packages.sh)", pytrace=False
        )
    pytest.skip(reason)
