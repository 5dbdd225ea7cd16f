"""A dataset's budget statement: the facts, gathered from the rows and the audit log.

The statement is written for a reader who is not a privacy engineer (a lawyer, a data
protection officer): what the budget is, what every release spent, what remains, and who
did what when. This module gathers those facts into plain dataclasses
(:func:`issue` records the request in the audit log first, then :func:`gather` reads);
``statement_words.py`` turns them into sentences and ``statement_render.py`` into HTML and PDF.

Consistency: :func:`issue` appends the ``statement.generated`` event first, which locks the
audit chain's head until the transaction ends. Every job, budget and release change appends
its audit event in the same transaction as the change, so none can commit while the facts
are read: the statement shows the dataset exactly as of its own event, the chain head it
prints. Reading is fast; rendering happens after the transaction.

Only what an auditor may see is gathered: no row count, file hash or size of the raw
upload (certificates' ``input_sha256`` is left out), no values of the data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from service.core import audit
from service.core.audit import AuditEvent
from service.core.ledger import SLACK, Budget, budget_of
from service.core.orm import ApiKey, Dataset, Job, JobState, Release, Tenant, User
from service.core.statement_words import as_utc, charge_reason, describe

StatementFormat = Literal["html", "pdf"]
# The timeline keeps the newest events up to this many; the rest are counted and said to be
# in the audit log export (a dataset downloaded daily for years would not fit a document).
# 500 events are about 25 PDF pages, drawn in a few seconds (fpdf2 breaks lines in Python).
TIMELINE_LIMIT = 500
ACTION = "statement.generated"

_ACCOUNTANTS = {"prv": "PRV (privacy loss random variables)", "rdp": "RDP (Rényi differential privacy)"}
_KINDS = {"gaussian": "Gaussian", "poisson_subsampled_gaussian": "subsampled Gaussian"}


@dataclass(frozen=True, kw_only=True)
class MechanismGroup:
    """Mechanisms of one kind in a certificate (e.g. every 2-way marginal), merged."""

    name: str  # in plain words, e.g. "Domain discovery"
    count: int
    kinds: tuple[str, ...]  # "Gaussian", "subsampled Gaussian"
    noise_min: float | None  # noise multipliers (sigma) of the group
    noise_max: float | None
    steps: int
    share: float  # sum of the group's stand-alone epsilon shares (0..1)


@dataclass(frozen=True, kw_only=True)
class EmpiricalAudit:
    """A lower bound on epsilon that an attack on the release's mechanisms demonstrated."""

    method: str
    epsilon_lower_bound: float
    confidence: float
    canaries: int
    guesses: int
    correct: int
    base: str
    ceiling: float | None = None  # the most this audit could have shown


@dataclass(frozen=True, kw_only=True)
class ReleaseFact:
    """One release and its certificate's guarantee.

    ``repeat`` marks a table drawn later from an already trained model: post-processing,
    covered by the same guarantee as the job's first release and charged once, with the job.
    """

    label: str
    release_id: str
    job_label: str
    job_id: str
    created_at: datetime
    rows: int
    state: str
    epsilon: float | None
    delta: float | None
    accountant: str
    neighbouring_relation: str
    mechanisms: tuple[MechanismGroup, ...]
    empirical_audit: EmpiricalAudit | None
    repeat: bool


@dataclass(frozen=True, kw_only=True)
class JobFact:
    """One training job: a line of the ledger (reserved while live, charged once final)."""

    label: str
    job_id: str
    state: str
    created_at: datetime
    finished_at: datetime | None
    epsilon_reserved: float
    delta_reserved: float
    epsilon_charged: float | None
    delta_charged: float | None
    release_labels: tuple[str, ...]
    why: str  # how the charge came about, in plain words

    @property
    def final(self) -> bool:
        """Whether the job's charge is settled."""
        return JobState(self.state).final


@dataclass(frozen=True, kw_only=True)
class Event:
    """One audit event about the dataset, its jobs or its releases."""

    seq: int
    at: datetime
    actor: str  # display name, e.g. "alice (custodian)"
    actor_id: str  # as the audit log writes it, e.g. "user:3f60…"
    action: str
    what: str  # in plain words


@dataclass(frozen=True, kw_only=True)
class ChainHead:
    """The audit chains' last event when the statement was made (its own event)."""

    seq: int
    hash: str
    tenant_seq: int
    tenant_hash: str


@dataclass(frozen=True, kw_only=True)
class Statement:
    """Everything a budget statement says, as of one point in the audit log."""

    dataset_id: str
    dataset_name: str
    tenant_name: str
    dataset_created_at: datetime
    raw_erased_at: datetime | None
    generated_at: datetime
    generated_by: str
    budget: Budget
    releases: tuple[ReleaseFact, ...]
    jobs: tuple[JobFact, ...]
    timeline: tuple[Event, ...]
    events_left_out: int
    head: ChainHead | None
    actors: tuple[tuple[str, str], ...]  # (display name, audit actor id), in order of appearance
    slack: float = SLACK

    @property
    def unreleased(self) -> tuple[JobFact, ...]:
        """Final jobs without a release (cancelled or failed): charged for what they may have spent."""
        return tuple(j for j in self.jobs if j.final and not j.release_labels)

    @property
    def live(self) -> tuple[JobFact, ...]:
        """Jobs still queued or running: their reservation is held, not yet charged."""
        return tuple(j for j in self.jobs if not j.final)

    @property
    def charged_jobs(self) -> tuple[JobFact, ...]:
        """Final jobs charged something."""
        return tuple(
            j for j in self.jobs if j.final and ((j.epsilon_charged or 0) > 0 or (j.delta_charged or 0) > 0)
        )


def _parse_at(text: str) -> datetime:
    return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def issue(session: Session, dataset: Dataset, *, actor: str, fmt: StatementFormat) -> Statement:
    """Record that ``actor`` asked for the statement, then gather it as of that event.

    The event goes first so the statement lists itself and prints its own event as the
    chain head (see the module's note on consistency). Call it in the request's transaction.
    """
    event = audit.append(
        session,
        action=ACTION,
        actor=actor,
        tenant_id=dataset.tenant_id,
        object_type="dataset",
        object_id=dataset.id,
        details={"format": fmt},
    )
    head = ChainHead(
        seq=event.seq, hash=event.hash, tenant_seq=event.tenant_seq, tenant_hash=event.tenant_hash
    )
    return gather(session, dataset, head=head, generated_at=_parse_at(event.at), generated_by=actor)


def gather(
    session: Session,
    dataset: Dataset,
    *,
    head: ChainHead | None,
    generated_at: datetime,
    generated_by: str,
) -> Statement:
    """The statement's facts from the dataset's jobs, releases and audit events (reads only).

    With ``head``, events after it are left out, so the timeline ends at the printed head.
    """
    jobs = session.scalars(
        select(Job).where(Job.dataset_id == dataset.id).order_by(Job.created_at, Job.id)
    ).all()
    releases = session.scalars(
        select(Release).where(Release.dataset_id == dataset.id).order_by(Release.created_at, Release.id)
    ).all()
    job_labels = {job.id: f"J{n}" for n, job in enumerate(jobs, 1)}
    release_labels = {release.id: f"R{n}" for n, release in enumerate(releases, 1)}
    by_job: dict[str, list[str]] = {}
    for release in releases:
        by_job.setdefault(release.job_id, []).append(release_labels[release.id])
    events, left_out = _events(session, dataset, head)
    names = _ActorNames(session)
    timeline = tuple(_event(e, names, job_labels, release_labels) for e in events)
    generated_by_name = names(generated_by)
    tenant = session.get(Tenant, dataset.tenant_id)
    return Statement(
        dataset_id=dataset.id,
        dataset_name=dataset.name,
        tenant_name=tenant.name if tenant is not None else dataset.tenant_id,
        dataset_created_at=as_utc(dataset.created_at),
        raw_erased_at=as_utc(dataset.raw_deleted_at) if dataset.raw_deleted_at else None,
        generated_at=generated_at,
        generated_by=generated_by_name,
        budget=budget_of(session, dataset),
        releases=_releases(releases, release_labels, job_labels),
        jobs=tuple(_job(job, job_labels[job.id], tuple(by_job.get(job.id, []))) for job in jobs),
        timeline=timeline,
        events_left_out=left_out,
        head=head,
        actors=names.seen(),
    )


def _releases(
    releases: Iterable[Release], labels: dict[str, str], job_labels: dict[str, str]
) -> tuple[ReleaseFact, ...]:
    out, seen_jobs = [], set()
    for release in releases:
        cert = release.certificate or {}
        accountant = (cert.get("accountant") or {}).get("name")
        out.append(
            ReleaseFact(
                label=labels[release.id],
                release_id=release.id,
                job_label=job_labels.get(release.job_id, "?"),
                job_id=release.job_id,
                created_at=as_utc(release.created_at),
                rows=release.rows,
                state=release.state,
                epsilon=_number(cert.get("epsilon")),
                delta=_number(cert.get("delta")),
                accountant=_ACCOUNTANTS.get(accountant, str(accountant or "not stated")),
                neighbouring_relation=str(cert.get("neighbouring_relation") or "not stated"),
                mechanisms=mechanism_groups(cert.get("mechanisms") or []),
                empirical_audit=_empirical(cert.get("empirical_audit")),
                repeat=release.job_id in seen_jobs,
            )
        )
        seen_jobs.add(release.job_id)
    return tuple(out)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _empirical(raw: Any) -> EmpiricalAudit | None:
    if not isinstance(raw, dict) or _number(raw.get("epsilon_lower_bound")) is None:
        return None
    return EmpiricalAudit(
        method=str(raw.get("method", "not stated")),
        epsilon_lower_bound=float(raw["epsilon_lower_bound"]),
        confidence=_number(raw.get("confidence")) or 0.0,
        canaries=int(raw.get("canaries") or 0),
        guesses=int(raw.get("guesses") or 0),
        correct=int(raw.get("correct") or 0),
        base=str(raw.get("base", "")),
        ceiling=_number(raw.get("epsilon_ceiling")),
    )


def _group_name(mechanism_name: str) -> str:
    kind, _, rest = mechanism_name.partition(":")
    if kind == "domain":
        return "Domain discovery"
    if kind == "marginal":
        return f"{len(rest.split(','))}-way marginals"
    if kind == "dp-sgd":
        return "DP-SGD training"
    return kind or "unnamed"


def mechanism_groups(mechanisms: list[dict[str, Any]]) -> tuple[MechanismGroup, ...]:
    """The certificate's mechanisms merged by kind, in the order they first appear."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for m in mechanisms:
        groups.setdefault(_group_name(str(m.get("name", ""))), []).append(m)
    out = []
    for name, members in groups.items():
        noise = [
            float(m["noise_multiplier"]) for m in members if _number(m.get("noise_multiplier")) is not None
        ]
        kinds = dict.fromkeys(_KINDS.get(str(m.get("type")), str(m.get("type", "?"))) for m in members)
        out.append(
            MechanismGroup(
                name=name,
                count=len(members),
                kinds=tuple(kinds),
                noise_min=min(noise) if noise else None,
                noise_max=max(noise) if noise else None,
                steps=sum(int(m.get("steps") or 0) for m in members),
                share=sum(_number(m.get("epsilon_share")) or 0.0 for m in members),
            )
        )
    return tuple(out)


def _job(job: Job, label: str, releases: tuple[str, ...]) -> JobFact:
    return JobFact(
        label=label,
        job_id=job.id,
        state=str(JobState(job.state).value),
        created_at=as_utc(job.created_at),
        finished_at=as_utc(job.finished_at) if job.finished_at else None,
        epsilon_reserved=job.epsilon,
        delta_reserved=job.delta,
        epsilon_charged=job.epsilon_charged,
        delta_charged=job.delta_charged,
        release_labels=releases,
        why=charge_reason(job),
    )


def _events(session: Session, dataset: Dataset, head: ChainHead | None) -> tuple[list[AuditEvent], int]:
    """The dataset's events in seq order (the newest ``TIMELINE_LIMIT``) and how many were left out.

    Events name their object (the dataset, one of its jobs or releases), except a batch's, which
    lists its jobs in its details: the tenant's batch events are read and kept when they hold
    one of the dataset's jobs.
    """
    jobs = select(Job.id).where(Job.dataset_id == dataset.id)
    releases = select(Release.id).where(Release.dataset_id == dataset.id)
    mine = [AuditEvent.tenant_id == dataset.tenant_id]
    if head is not None:
        mine.append(AuditEvent.seq <= head.seq)
    about = or_(
        and_(AuditEvent.object_type == "dataset", AuditEvent.object_id == dataset.id),
        and_(AuditEvent.object_type == "job", AuditEvent.object_id.in_(jobs)),
        and_(AuditEvent.object_type == "release", AuditEvent.object_id.in_(releases)),
    )
    total = session.scalar(select(func.count()).select_from(AuditEvent).where(*mine, about)) or 0
    newest = session.scalars(
        select(AuditEvent).where(*mine, about).order_by(AuditEvent.seq.desc()).limit(TIMELINE_LIMIT)
    ).all()
    job_ids = set(session.scalars(jobs))
    batches = [
        event
        for event in session.scalars(select(AuditEvent).where(*mine, AuditEvent.action == "batch.queued"))
        if job_ids & set(json.loads(event.details).get("jobs") or [])
    ]
    kept = sorted([*newest, *batches], key=lambda event: event.seq)[-TIMELINE_LIMIT:]
    return kept, total + len(batches) - len(kept)


class _ActorNames:
    """Audit actors (``key:<id>``, ``user:<id>``, ``worker:<name>``) as people read them."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.names: dict[str, str] = {}

    def __call__(self, actor: str) -> str:
        if actor not in self.names:
            self.names[actor] = self._name(actor)
        return self.names[actor]

    def _name(self, actor: str) -> str:
        kind, _, ident = actor.partition(":")
        if kind == "user":
            user = self.session.get(User, ident)
            return f"{user.name} ({user.role.value})" if user is not None else f"user {ident[:8]}"
        if kind == "key":
            key = self.session.get(ApiKey, ident)
            return f"API key “{key.name}” ({key.role.value})" if key is not None else f"API key {ident[:8]}"
        if kind == "worker":
            return f"worker {ident}"
        if kind == "system":
            return f"the service ({ident})"
        return actor

    def seen(self) -> tuple[tuple[str, str], ...]:
        """(display name, actor id) of every actor named so far."""
        return tuple((name, actor) for actor, name in self.names.items())


def _event(event: AuditEvent, names: _ActorNames, jobs: dict[str, str], releases: dict[str, str]) -> Event:
    details = json.loads(event.details)
    return Event(
        seq=event.seq,
        at=_parse_at(event.at),
        actor=names(event.actor),
        actor_id=event.actor,
        action=event.action,
        what=describe(event.action, event.object_id, details, jobs, releases),
    )
