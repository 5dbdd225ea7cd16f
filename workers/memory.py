"""A memory limit per job, so one job that needs too much fails alone instead of the worker."""

from __future__ import annotations

import contextlib
import re
import resource
from collections.abc import Iterator
from pathlib import Path


def data_bytes() -> int:
    """This process's data memory now (VmData: heap and private writable mappings), in bytes."""
    status = Path("/proc/self/status").read_text()
    found = re.search(r"^VmData:\s+(\d+) kB", status, flags=re.MULTILINE)
    if found is None:
        raise OSError("no VmData in /proc/self/status")
    return int(found.group(1)) * 1024


@contextlib.contextmanager
def job_memory_limit(megabytes: int | None) -> Iterator[None]:
    """Let the code inside allocate at most ``megabytes`` more data memory (Linux ``RLIMIT_DATA``).

    An allocation over the limit fails with ``MemoryError`` (or torch's "can't allocate
    memory"), which the runner turns into a failed attempt; without a limit the kernel's
    OOM killer would take the whole worker, and a container limit often does exactly that.
    """
    if megabytes is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = data_bytes() + (megabytes << 20)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
