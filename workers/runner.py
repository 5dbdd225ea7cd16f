"""One training job, start to finish, as a worker runs it.

Claim the job this worker should run next (a duplicate message finds nothing to claim),
renew the lease from a heartbeat thread, decrypt the upload, fit the engine with progress and cancellation
wired to the row, store the model and the first release, then settle the charge in the
same transaction that marks the job final. Whatever goes wrong, the job ends final and
charged: exactly what the engine spent when it says so (cancel), nothing when the engine
refused the input before spending, and the whole reservation otherwise (an unexpected
error may strike after any charge). Two endings keep the job alive instead: a worker
shutting down checkpoints and hands it back uncharged, and a job that ran out of memory
is retried once from its checkpoint (as if its worker had died) before it fails.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from models import (
    FitCancelledError,
    PrivacyParameterError,
    ProgressEvent,
    SchemaError,
    SecureModeUnavailableError,
    Synthesizer,
)
from models.quality import evaluate_quality
from models.quality_detail import association_matrix, marginal_comparison
from models.reproduce import file_sha256, rederive, table_sha256
from service.core import crypto, jobs, queueing
from service.core.config import Settings
from service.core.db import transaction
from service.core.errors import ConflictError
from service.core.jobs import checkpoint_key, model_key
from service.core.orm import Dataset, Job, JobState, Release, new_id
from service.core.releases import release_key
from service.core.storage import Storage
from service.core.uploads import open_raw
from workers.memory import job_memory_limit
from workers.privacy_audit import audit_rows, empirical_audit
from workers.profile import WorkerProfile

log = logging.getLogger(__name__)

# Set when the worker is told to shut down (SIGTERM): the running job checkpoints and is handed back.
SHUTTING_DOWN = threading.Event()
# Phases whose stop leaves a checkpoint that holds every charge made so far (the measuring
# phase is short and its checkpoint is written only at its end, so a shutdown waits for it).
CHECKPOINTED_PHASES = frozenset({"generator", "dp-gan"})
HOLDOUT_SHARE = 0.2  # rows kept out of training for the custodian's quality report
PROGRESS_EVERY = 0.5  # seconds between progress writes
# Job options handed to the engine as they are (the API validated them).
ENGINE_OPTIONS = (
    "generator_steps",
    "accountant",
    "discriminator_share",
    "dpsgd_epochs",
    "batch_size",
    "secure_mode",
)


def copy_to_storage(path: Path, storage: Storage, key: str) -> None:
    """Upload a local file (atomically, as every storage write)."""
    with path.open("rb") as src, storage.open_write(key) as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)


def copy_from_storage(storage: Storage, key: str, path: Path) -> None:
    """Download a stored object to a local file."""
    with storage.open_read(key) as src, path.open("wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)


def draw_release(model_path: Path, *, rows: int, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A release's table drawn from a stored model file, and the record that re-derives it."""
    table = rederive(model_path, rows=rows, seed=seed)
    record = {
        "model_sha256": file_sha256(model_path),
        "rows": len(table),
        "sample_seed": seed,
        "table_sha256": table_sha256(table),
        "device": "cpu",
    }
    return table, record


def write_release(storage: Storage, key: str, table: pd.DataFrame) -> None:
    """Store a release's table as Parquet (row groups keep CSV downloads streaming)."""
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False, row_group_size=100_000)
    with storage.open_write(key) as dst:
        dst.write(buffer.getvalue())


class Heartbeat(threading.Thread):
    """Renews the lease every ``interval`` seconds; notices cancel requests and a lost lease."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str, owner: str, settings: Settings) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.sessions, self.job_id, self.owner, self.settings = sessions, job_id, owner, settings
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Renew until stopped; a failed renewal is retried at the next beat."""
        while not self._stop_event.wait(self.settings.heartbeat_seconds):
            try:
                with transaction(self.sessions) as session:
                    ours, cancel = jobs.renew(
                        session, self.job_id, owner=self.owner, lease_seconds=self.settings.lease_seconds
                    )
            except Exception:  # the database may be briefly unavailable; the lease has slack
                log.exception("lease renewal of job %s failed", self.job_id)
                continue
            if cancel:
                self.cancel.set()
            if not ours:
                self.lost.set()
                return

    def stop(self) -> None:
        """Stop renewing."""
        self._stop_event.set()
        self.join(timeout=5)


@dataclass
class JobContext:
    """What the runner reads from the rows before training."""

    job: Job
    dataset: Dataset


def _load(sessions: sessionmaker[Session], job_id: str) -> JobContext:
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        dataset = session.get(Dataset, job.dataset_id)
        assert dataset is not None
        return JobContext(job=job, dataset=dataset)


def read_dataset(dataset: Dataset, *, storage: Storage, master_key: bytes) -> pd.DataFrame:
    """Decrypt and parse a dataset's raw upload.

    Raises:
        ConflictError: the raw data was erased.
    """
    if dataset.storage_key is None or dataset.wrapped_key is None:
        raise ConflictError("the raw data of this dataset was erased")
    data_key = crypto.unwrap_key(master_key, dataset.wrapped_key, context=dataset.id)
    with open_raw(storage, dataset.storage_key, data_key, dataset_id=dataset.id) as fh:
        return pd.read_csv(fh) if dataset.file_format == "csv" else pd.read_parquet(fh)


def _split(df: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    holdout_rows = int(len(df) * HOLDOUT_SHARE)
    if holdout_rows == 0:
        return df, df.iloc[:0]
    order = np.random.default_rng(seed).permutation(len(df))
    return df.iloc[order[holdout_rows:]].reset_index(drop=True), df.iloc[order[:holdout_rows]].reset_index(
        drop=True
    )


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (Python, torch CPU or CUDA), which a retry may survive."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


@dataclass(frozen=True)
class Ran:
    """A job this worker claimed, and the state it left it in."""

    job_id: str
    tenant_id: str
    queue: str
    state: JobState


class JobRunner:
    """Runs jobs for one worker identity (``owner``) with its device and queues."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        storage: Storage,
        owner: str,
        profile: WorkerProfile,
    ) -> None:
        self.settings, self.sessions, self.storage, self.owner = settings, sessions, storage, owner
        self.profile = profile

    def run_next(self) -> Ran | None:
        """Claim and run the job this worker should run next; None when there is none it may run."""
        with transaction(self.sessions) as session:
            claimed = queueing.claim_next(
                session,
                owner=self.owner,
                queues=self.profile.queues,
                lease_seconds=self.settings.lease_seconds,
                device=self.profile.description,
                default_limit=self.settings.tenant_max_running_jobs,
            )
            if claimed is None:
                return None
            job_id, tenant_id, queue = claimed.id, claimed.tenant_id, claimed.queue
        heartbeat = Heartbeat(self.sessions, job_id, self.owner, self.settings)
        heartbeat.start()
        try:
            with job_memory_limit(self.settings.job_memory_mb):
                state = self._train(_load(self.sessions, job_id), heartbeat)
        finally:
            heartbeat.stop()
        return Ran(job_id=job_id, tenant_id=tenant_id, queue=queue, state=state)

    def _progress(self, job_id: str, checkpoint: Path, phase: list[str]) -> Any:
        last = [0.0]
        shipped = [checkpoint.stat().st_mtime_ns if checkpoint.exists() else 0]

        def report(event: ProgressEvent) -> None:
            phase[0] = event.phase
            now = time.monotonic()
            if now - last[0] < PROGRESS_EVERY and event.fraction < 1.0:
                return
            last[0] = now
            with transaction(self.sessions) as session:
                ours = jobs.report_progress(
                    session,
                    job_id,
                    owner=self.owner,
                    progress=round(event.fraction, 4),
                    phase=event.phase,
                    epoch=event.epoch,
                    epsilon=event.epsilon_spent,
                )
            # A new checkpoint goes to shared storage, where the next worker resumes from it
            # if this one dies; a worker that lost the job must not overwrite its successor's.
            if ours and checkpoint.exists() and checkpoint.stat().st_mtime_ns != shipped[0]:
                shipped[0] = checkpoint.stat().st_mtime_ns
                copy_to_storage(checkpoint, self.storage, checkpoint_key(job_id))

        return report

    def _fit(
        self, job: Job, dataset: Dataset, synth: Synthesizer, train: pd.DataFrame, heartbeat: Heartbeat
    ) -> None:
        phase = ["starting"]

        def should_stop() -> bool:
            if heartbeat.cancel.is_set() or heartbeat.lost.is_set():
                return True
            return SHUTTING_DOWN.is_set() and phase[0] in CHECKPOINTED_PHASES

        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = Path(tmp) / "checkpoint.pt"
            if self.storage.exists(checkpoint_key(job.id)):  # an earlier attempt stopped: resume
                copy_from_storage(self.storage, checkpoint_key(job.id), checkpoint)
            try:
                synth.fit(
                    train,
                    progress=self._progress(job.id, checkpoint, phase),
                    should_stop=should_stop,
                    checkpoint_path=checkpoint,
                    input_sha256=dataset.sha256,
                )
            except FitCancelledError:
                # The engine checkpointed where it stopped; the next attempt resumes from there.
                if checkpoint.exists() and not heartbeat.lost.is_set():
                    copy_to_storage(checkpoint, self.storage, checkpoint_key(job.id))
                raise

    def _train(self, ctx: JobContext, heartbeat: Heartbeat) -> JobState:
        job, dataset = ctx.job, ctx.dataset
        seed = int(job.options.get("seed", 0))
        try:
            df = read_dataset(dataset, storage=self.storage, master_key=self.settings.master_key())
            train, holdout = _split(df, seed)
            extra = {k: v for k, v in job.options.items() if k in ENGINE_OPTIONS}
            synth = Synthesizer(
                epsilon=job.epsilon,
                delta=job.delta,
                schema=dataset.schema,
                seed=seed,
                device=self.profile.device,
                **extra,
            )
            self._fit(job, dataset, synth, train, heartbeat)
            return self._finish(job, dataset, synth, train, holdout)
        except FitCancelledError as exc:
            if heartbeat.cancel.is_set():
                return self._stop(job, JobState.cancelled, exc.epsilon_spent, "cancelled by request")
            if heartbeat.lost.is_set():
                return self._stop(job, JobState.cancelled, exc.epsilon_spent, "lease lost")
            return self._requeue(job, jobs.hand_back, "the worker shut down; resumes from its checkpoint")
        except (SchemaError, PrivacyParameterError, SecureModeUnavailableError, ConflictError) as exc:
            # The engine checks its input and its whole plan before the first mechanism runs.
            return self._stop(job, JobState.failed, 0.0, str(exc))
        except Exception as exc:
            if out_of_memory(exc):
                log.warning("job %s ran out of memory: %s", job.id, exc)
                traceback.clear_frames(exc.__traceback__)  # free what the failed attempt held
                limit = self.settings.job_memory_mb
                reason = "ran out of memory" + (f" (limit {limit} MB per job)" if limit else "")
                return self._requeue(job, jobs.crashed, reason)
            log.exception("job %s failed", job.id)
            detail = "".join(traceback.format_exception_only(exc)).strip()
            return self._stop(job, JobState.failed, job.epsilon, f"internal error: {detail[:500]}")

    def _requeue(self, job: Job, how: Callable[..., Job], reason: str) -> JobState:
        """Give the job back with ``how`` (``jobs.hand_back`` or ``jobs.crashed``); its checkpoint stays."""
        try:
            with transaction(self.sessions) as session:
                state = JobState(how(session, job.id, owner=self.owner, reason=reason).state)
        except ConflictError:
            log.warning("job %s is no longer ours (lease lost); leaving it as it is", job.id)
            return JobState.failed
        if state.final:
            self.storage.delete(checkpoint_key(job.id))
        return state

    def _stop(self, job: Job, state: JobState, epsilon: float, error: str | None) -> JobState:
        try:
            with transaction(self.sessions) as session:
                final = jobs.stop(
                    session, job.id, owner=self.owner, state=state, epsilon=epsilon, error=error
                )
        except ConflictError:
            # Requeued or settled elsewhere: its checkpoint may be another worker's now.
            log.warning("job %s is no longer ours (lease lost); leaving it as it is", job.id)
            return JobState.failed
        self.storage.delete(checkpoint_key(job.id))
        return final.state

    def _finish(
        self, job: Job, dataset: Dataset, synth: Synthesizer, train: pd.DataFrame, holdout: pd.DataFrame
    ) -> JobState:
        seed = synth.config.seed
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.safetensors"
            synth.save(path)
            copy_to_storage(path, self.storage, model_key(job.id))
            # Drawn from the stored file on CPU, so whoever holds the model re-draws this very table.
            table, reproduce = draw_release(path, rows=job.rows, seed=seed)
        release_id = new_id()
        write_release(self.storage, release_key(release_id), table)
        certificate = dict(synth.certificate)
        certificate["service"] = {
            "job_id": job.id,
            "dataset_id": dataset.id,
            "release_id": release_id,
            "sample_seed": seed,
            "reproduce": reproduce,
        }
        if self.settings.empirical_audit:
            certificate["empirical_audit"] = empirical_audit(
                synth,
                rows=audit_rows(synth.certificate, job.rows),
                canaries=self.settings.empirical_audit_canaries,
                seed=seed + 1,
            )
        quality = self._quality(dataset, train, holdout, table)
        release = Release(
            id=release_id,
            tenant_id=job.tenant_id,
            job_id=job.id,
            dataset_id=dataset.id,
            rows=len(table),
            storage_key=release_key(release_id),
            certificate=certificate,
            quality=quality,
        )
        spent = float(certificate["epsilon"])
        with transaction(self.sessions) as session:
            jobs.succeed(
                session, job.id, owner=self.owner, epsilon=spent, model_key=model_key(job.id), release=release
            )
        self.storage.delete(checkpoint_key(job.id))
        return JobState.succeeded

    @staticmethod
    def _quality(
        dataset: Dataset, train: pd.DataFrame, holdout: pd.DataFrame, table: pd.DataFrame
    ) -> dict[str, Any] | None:
        if holdout.empty or table.empty:
            return None
        cols = [c for c in table.columns if c in train.columns]
        target = dataset.schema.get("target")
        with contextlib.suppress(ValueError):
            real, synthetic = train[cols], table[cols]
            report = evaluate_quality(
                real, holdout[cols], synthetic, target=target if target in cols else None
            )
            # The pictures of the web form's report: real (train) vs synthetic, custodian-only like the rest.
            return {
                **report.to_dict(),
                "train_rows": len(train),
                "holdout_rows": len(holdout),
                "marginals": marginal_comparison(real, synthetic),
                "associations": {
                    "real": association_matrix(real, reference=real),
                    "synthetic": association_matrix(synthetic, reference=real),
                },
            }
        return None
