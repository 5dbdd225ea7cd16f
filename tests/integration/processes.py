"""The real thing as separate processes: ``dpsynth serve``, ``dpsynth worker`` and CLI calls."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.servers import free_port


def service_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a throwaway service: short leases so crash recovery takes seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPSYNTH_")}
    env.update(
        DPSYNTH_DATA_DIR=str(data_dir),
        DPSYNTH_ENCRYPTION_KEY=base64.b64encode(os.urandom(32)).decode(),
        DPSYNTH_LEASE_SECONDS="4",
        DPSYNTH_HEARTBEAT_SECONDS="0.5",
        DPSYNTH_RECONCILE_SECONDS="1",
        DPSYNTH_BROKER_POLL_SECONDS="0.2",
        **extra,
    )
    return env


def cli(
    env: dict[str, str], *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``dpsynth ARGS`` and return what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"dpsynth {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


class Process:
    """A long-running ``dpsynth`` subcommand in its own process group, logged to a file."""

    def __init__(self, env: dict[str, str], *args: str, log: Path) -> None:
        self.log = log
        self._log = log.open("w")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the whole process group (no cleanup, like a crashed machine)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def terminate(self, timeout: float) -> int:
        """SIGTERM the main process only and wait for it to exit by itself; returns its exit code."""
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL whatever is left of the group."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=30)
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        """The end of the process's output, for failure messages."""
        self._log.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Server(Process):
    """``dpsynth serve`` on a free port, ready when /health answers."""

    def __init__(self, env: dict[str, str], *args: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env["DPSYNTH_URL"] = self.url
        super().__init__(env, "serve", "--port", str(self.port), *args, log=log)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dpsynth serve did not start:\n{self.tail()}")
            time.sleep(0.2)


def wait_for(predicate, *, timeout: float, what: str, every: float = 0.2):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)
