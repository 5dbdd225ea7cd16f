"""Drawing a further release from a finished job's stored model (post-processing, no budget)."""

from __future__ import annotations

import logging
import tempfile
import traceback
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from models import Synthesizer
from service.core import releases
from service.core.db import transaction
from service.core.orm import Job, Release
from service.core.storage import Storage
from workers.runner import write_release

log = logging.getLogger(__name__)


def load_model(storage: Storage, key: str) -> Synthesizer:
    """A stored model (weights and JSON; ``Synthesizer.load`` unpickles nothing)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        with storage.open_read(key) as src, path.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        return Synthesizer.load(path, device="cpu")


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
        table = load_model(storage, model_key).sample(rows, random_state=seed)
        write_release(storage, release.storage_key, table)
        with transaction(sessions) as session:
            return releases.complete(session, release_id, rows=len(table), actor=f"worker:{owner}").state
    except Exception as exc:
        log.exception("release %s failed", release_id)
        with transaction(sessions) as session:
            detail = "".join(traceback.format_exception_only(exc)).strip()[:500]
            releases.fail(session, release_id, error=detail, actor=f"worker:{owner}")
        return "failed"
