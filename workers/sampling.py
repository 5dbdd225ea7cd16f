"""Drawing a further release from a finished job's stored model (post-processing, no budget)."""

from __future__ import annotations

import logging
import tempfile
import traceback
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from service.core import releases
from service.core.db import transaction
from service.core.orm import Job, Release
from service.core.storage import Storage
from workers.runner import draw_release, write_release

log = logging.getLogger(__name__)


def fetch_model(storage: Storage, key: str, path: Path) -> None:
    """Copy a stored model (safetensors: nothing in it is executed) to ``path``."""
    with storage.open_read(key) as src, path.open("wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)


def sample_release(sessions: sessionmaker[Session], storage: Storage, release_id: str, *, owner: str) -> str:
    """Write a pending release's table and mark it ready; returns its final state."""
    with transaction(sessions) as session:
        release = session.get(Release, release_id)
        if release is None or release.state != "pending":
            return "skipped" if release is None else release.state
        job = session.get(Job, release.job_id)
        assert job is not None and job.model_key is not None
        rows, model_key = release.rows, job.model_key
        seed = int(release.certificate["service"]["sample_seed"])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.safetensors"
            fetch_model(storage, model_key, path)
            table, reproduce = draw_release(path, rows=rows, seed=seed)
        write_release(storage, release.storage_key, table)
        with transaction(sessions) as session:
            done = releases.complete(
                session, release_id, rows=len(table), reproduce=reproduce, actor=f"worker:{owner}"
            )
            return done.state
    except Exception as exc:
        log.exception("release %s failed", release_id)
        with transaction(sessions) as session:
            detail = "".join(traceback.format_exception_only(exc)).strip()[:500]
            releases.fail(session, release_id, error=detail, actor=f"worker:{owner}")
        return "failed"
