"""The periodic sweep that settles jobs whose worker died (their lease ran out)."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from service.core import jobs
from service.core.db import transaction

log = logging.getLogger(__name__)


def reconcile_once(sessions: sessionmaker[Session]) -> list[str]:
    """Settle every expired lease now; returns the job ids."""
    with transaction(sessions) as session:
        settled = jobs.reconcile(session)
    for job_id in settled:
        log.warning("job %s: %s; marked failed and charged its reservation", job_id, jobs.WORKER_LOST)
    return settled


class Reconciler(threading.Thread):
    """Runs ``reconcile_once`` every ``interval`` seconds until stopped."""

    def __init__(self, sessions: sessionmaker[Session], interval: float) -> None:
        super().__init__(name="reconciler", daemon=True)
        self.sessions, self.interval = sessions, interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Sweep until stopped; a failed sweep is logged and retried."""
        while not self._stop_event.wait(self.interval):
            try:
                reconcile_once(self.sessions)
            except Exception:
                log.exception("reconcile sweep failed")

    def stop(self) -> None:
        """Stop sweeping."""
        self._stop_event.set()
