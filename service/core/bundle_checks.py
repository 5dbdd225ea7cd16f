"""The shapes of a bundle's manifest and ledger, and the checks that hold them against each other.

Used by ``bundle_verify``; see ``bundles.py`` for the format. Each check adds plain-words
problems that name the file, the dataset, the job or the release, so that one run lists
everything that is wrong.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.core.bundle_format import CERTIFICATES, SLACK, certificate_digest
from service.core.orm import JobState

FINAL_STATES = frozenset(state.value for state in JobState if state.final)
Problem = Callable[[str], None]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


class FileEntry(_Strict):
    """A file of the bundle as the manifest lists it."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class ScopeModel(_Strict):
    """What the bundle covers."""

    tenant_id: str
    dataset_id: str | None
    since: str | None
    until: str | None


class ChainEnd(_Strict):
    """A chain's last event at export."""

    seq: int = Field(ge=0)
    hash: str


class ChainModel(_Strict):
    """The tenant chain and its head at export."""

    name: str
    head: ChainEnd


class SliceStart(_Strict):
    """The first event of the slice and the hash it follows."""

    tenant_seq: int = Field(ge=1)
    tenant_prev_hash: str


class SliceEnd(_Strict):
    """The last event of the slice."""

    tenant_seq: int = Field(ge=1)
    tenant_hash: str


class EventsModel(_Strict):
    """The slice of the tenant chain in ``events.jsonl``."""

    count: int = Field(ge=0)
    first: SliceStart | None
    last: SliceEnd | None
    dataset_event_seqs: list[int] | None


class KeyModel(_Strict):
    """The key that signed the manifest."""

    algorithm: Literal["Ed25519"]
    fingerprint: str
    file: str


class Manifest(_Strict):
    """``manifest.json``."""

    format: str
    scope: ScopeModel
    generated_at: str
    generated_by: str
    service: dict[str, str]
    chain: ChainModel
    events: EventsModel
    counts: dict[str, int]
    files: dict[str, FileEntry]
    public_key: KeyModel


class BudgetModel(_Strict):
    """A dataset's budget as the ledger states it."""

    epsilon_total: float | None
    delta_total: float | None
    epsilon_charged: float
    delta_charged: float
    epsilon_reserved: float
    delta_reserved: float
    epsilon_remaining: float
    delta_remaining: float


class LineModel(_Strict):
    """One job's line."""

    job_id: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    epsilon_reserved: float
    delta_reserved: float
    epsilon_charged: float | None
    delta_charged: float | None
    created_at: str | None
    finished_at: str | None
    release_ids: list[str]

    @property
    def final(self) -> bool:
        """Whether the line's charge is settled."""
        return self.state in FINAL_STATES


class DatasetLedgerModel(_Strict):
    """One dataset's ledger."""

    dataset_id: str
    name: str
    created_at: str | None
    raw_deleted_at: str | None
    budget: BudgetModel
    lines: list[LineModel]


class LedgerModel(_Strict):
    """``ledger.json``."""

    datasets: list[DatasetLedgerModel]


def shape_problem(error: Exception) -> str:
    """The first few of pydantic's complaints, in one line."""
    errors: list[dict[str, Any]] = list(getattr(error, "errors", list)())
    parts = [f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more if parts else str(error)


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=SLACK)


def check_ledger(ledger: LedgerModel, problem: Problem) -> None:
    """Each dataset's budget against its own lines: sums, totals, remaining, states and releases."""
    for name, count in Counter(d.dataset_id for d in ledger.datasets).items():
        if count > 1:
            problem(f"ledger.json: dataset {name} appears {count} times")
    jobs = Counter(line.job_id for d in ledger.datasets for line in d.lines)
    releases = Counter(rid for d in ledger.datasets for line in d.lines for rid in line.release_ids)
    for kind, counter in (("job", jobs), ("release", releases)):
        for name, count in counter.items():
            if count > 1:
                problem(f"ledger.json: {kind} {name} appears on {count} lines")
    for dataset in ledger.datasets:
        _check_dataset(
            dataset, functools.partial(_prefixed, problem, f"ledger.json, dataset {dataset.dataset_id}: ")
        )


def _prefixed(problem: Problem, prefix: str, text: str) -> None:
    problem(prefix + text)


def _check_dataset(dataset: DatasetLedgerModel, problem: Problem) -> None:
    budget = dataset.budget
    for line in dataset.lines:
        where = f"job {line.job_id} ({line.state})"
        if line.final and (line.epsilon_charged is None or line.delta_charged is None):
            problem(f"{where} is final but has no charge")
        if not line.final and (line.epsilon_charged is not None or line.delta_charged is not None):
            problem(f"{where} is not final but has a charge")
        if (line.epsilon_charged or 0.0) > line.epsilon_reserved + SLACK:
            problem(
                f"{where} was charged epsilon {line.epsilon_charged} "
                f"but reserved only {line.epsilon_reserved}"
            )
        if (line.delta_charged or 0.0) > line.delta_reserved * (1 + SLACK):
            problem(f"{where} was charged delta {line.delta_charged} but reserved only {line.delta_reserved}")
        if line.state == "succeeded" and not line.release_ids:
            problem(f"{where} succeeded but has no release")
        if line.state != "succeeded" and line.release_ids:
            problem(f"{where} did not succeed but has releases {', '.join(line.release_ids)}")
    final = [line for line in dataset.lines if line.final]
    live = [line for line in dataset.lines if not line.final]
    sums = {
        "epsilon_charged": math.fsum(line.epsilon_charged or 0.0 for line in final),
        "delta_charged": math.fsum(line.delta_charged or 0.0 for line in final),
        "epsilon_reserved": math.fsum(line.epsilon_reserved for line in live),
        "delta_reserved": math.fsum(line.delta_reserved for line in live),
    }
    for field, total in sums.items():
        stated = getattr(budget, field)
        if not _same(stated, total):
            what = field.replace("_", " ")
            problem(f"the budget says {what} {stated!r}, but its job lines sum to {total!r}")
    for name in ("epsilon", "delta"):
        total = getattr(budget, f"{name}_total")
        used = sums[f"{name}_charged"] + sums[f"{name}_reserved"]
        if total is None:
            if dataset.lines:
                problem(f"jobs spent from a budget whose total {name} is not set")
            continue
        limit = total + SLACK if name == "epsilon" else total * (1 + SLACK)
        if used > limit:
            problem(f"{name} charged plus reserved ({used!r}) exceeds the total budget {total!r}")
        if not _same(getattr(budget, f"{name}_remaining"), max(0.0, total - used)):
            stated = getattr(budget, f"{name}_remaining")
            problem(
                f"the budget says {name} remaining {stated!r}, "
                f"but total minus used is {max(0.0, total - used)!r}"
            )


def check_certificates(
    ledger: LedgerModel, certificates: Mapping[str, Any], listed: set[str], problem: Problem
) -> None:
    """Every release's certificate against its ledger line, and every certificate against a release.

    ``certificates`` maps a release id to its parsed certificate (or to a problem text when
    it could not be read); ``listed`` holds the release ids whose certificate the bundle lists.
    """
    known: set[str] = set()
    for dataset in ledger.datasets:
        for line in dataset.lines:
            for release_id in line.release_ids:
                known.add(release_id)
                where = f"{CERTIFICATES}{release_id}.json"
                if release_id not in listed:
                    problem(f"release {release_id} of job {line.job_id} has no certificate in the bundle")
                    continue
                certificate = certificates.get(release_id)
                if isinstance(certificate, dict):
                    _check_certificate(where, release_id, certificate, dataset.dataset_id, line, problem)
    for release_id in sorted(listed - known):
        problem(f"{CERTIFICATES}{release_id}.json is the certificate of no release in the ledger")


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _check_certificate(
    where: str, release_id: str, cert: dict[str, Any], dataset_id: str, line: LineModel, problem: Problem
) -> None:
    raw = cert.get("service")
    service: dict[str, Any] = raw if isinstance(raw, dict) else {}
    named = service.get("release_id")
    if named != release_id:
        problem(
            f"{where} is the certificate of release {named}, not of {release_id}: "
            "certificates were swapped or renamed"
        )
    if service.get("job_id") != line.job_id:
        problem(
            f"{where} names job {service.get('job_id')}, "
            f"but the ledger lists release {release_id} under job {line.job_id}"
        )
    if service.get("dataset_id") != dataset_id:
        problem(
            f"{where} names dataset {service.get('dataset_id')}, "
            f"but the ledger lists it under dataset {dataset_id}"
        )
    epsilon, delta = _number(cert.get("epsilon")), _number(cert.get("delta"))
    if epsilon is None:
        problem(f"{where} states no epsilon")
    elif line.epsilon_charged is not None and abs(epsilon - line.epsilon_charged) > SLACK:
        problem(
            f"the ledger charged job {line.job_id} epsilon {line.epsilon_charged!r}, "
            f"but {where} says its release spent epsilon {epsilon!r}"
        )
    if delta is None:
        problem(f"{where} states no delta")
    elif line.delta_charged is not None and delta > line.delta_charged * (1 + SLACK):
        problem(
            f"{where} says delta {delta!r}, "
            f"more than the ledger charged job {line.job_id} ({line.delta_charged!r})"
        )


class JobEvent(BaseModel):
    """What the verifier keeps of an event about a job, a dataset upload or a release's creation."""

    tenant_seq: int
    action: str
    object_id: str | None
    dataset_id: str | None
    details: dict[str, Any]


def check_events_against_ledger(
    events: list[JobEvent], ledger: LedgerModel, problem: Problem, *, whole_tenant: bool
) -> None:
    """What the hash-chained log recorded about jobs must agree with the ledger's lines.

    Only events inside the bundle's slice are held against it: a job queued before ``since``
    has no event here, and that is no problem. A bundle of the whole tenant must also hold
    the ledger of every dataset whose upload is in the slice.
    """
    lines = {line.job_id: line for dataset in ledger.datasets for line in dataset.lines}
    datasets = {dataset.dataset_id for dataset in ledger.datasets}
    for event in events:
        where = f"the audit log (tenant_seq {event.tenant_seq})"
        if event.action == "dataset.upload":
            if whole_tenant and event.object_id not in datasets:
                problem(
                    f"{where} records the upload of dataset {event.object_id}, but the ledger leaves it out"
                )
            continue
        line = lines.get(event.object_id or "")
        if line is None:
            if event.action == "job.queued" and event.dataset_id in datasets:
                problem(
                    f"{where} queued job {event.object_id} on dataset {event.dataset_id}, "
                    "but the ledger has no line for it: a ledger line was removed"
                )
            continue
        if event.action == "job.queued":
            for name in ("epsilon", "delta"):
                logged = _number(event.details.get(name))
                reserved = getattr(line, f"{name}_reserved")
                if logged is not None and logged != reserved:
                    problem(
                        f"{where} queued job {line.job_id} with {name} {logged!r}, "
                        f"but the ledger reserves {reserved!r}"
                    )
        state = event.action.removeprefix("job.")
        if state in FINAL_STATES:
            if line.state != state:
                problem(
                    f"{where} says job {line.job_id} ended {state}, but the ledger says it is {line.state}"
                )
            logged = _number(event.details.get("epsilon_charged"))
            if logged is not None and (
                line.epsilon_charged is None or not _same(logged, line.epsilon_charged)
            ):
                problem(
                    f"{where} charged job {line.job_id} epsilon {logged!r}, "
                    f"but the ledger says {line.epsilon_charged!r}"
                )


def check_certificates_against_events(
    events: list[JobEvent], certificates: Mapping[str, Any], problem: Problem
) -> None:
    """Each certificate must be the one the hash-chained log recorded when its release was created.

    A certificate edited in the database after its release (its epsilon, its mechanisms, its
    empirical audit) would otherwise travel in a bundle that the service signs afresh.
    Events outside the bundle's slice, and older events without a digest, are not held.
    """
    for event in events:
        logged = event.details.get("certificate_sha256")
        certificate = certificates.get(event.object_id or "")
        if (
            event.action != "release.created"
            or not isinstance(logged, str)
            or not isinstance(certificate, dict)
        ):
            continue
        if certificate_digest(certificate) != logged:
            problem(
                f"{CERTIFICATES}{event.object_id}.json is not the certificate the audit log recorded when "
                f"release {event.object_id} was created (tenant_seq {event.tenant_seq}): it was changed since"
            )
