"""Audit bundles: signed evidence of a tenant's (or one dataset's) log, ledger and certificates.

A bundle is a zip that verifies offline (``bundle_verify.verify_bundle``, ``dpsynth audit
verify BUNDLE``), without the service or the raw data::

    events.jsonl               the tenant chain's events in the time range, as audit.export_jsonl writes them
    ledger.json                per dataset: its budget and every job line (state, reserved, charged, releases)
    certificates/<id>.json     every release's certificate (without the custodian-only input hash)
    public_key.pem             the service's Ed25519 public key
    manifest.json              scope, time, code version, chain head, counts, SHA-256 of every file above
    manifest.sig               Ed25519 signature of the exact bytes of manifest.json (base64)

Completeness. A dataset's events are not a chain of their own, so a file holding only them
could lose one without a trace. A bundle therefore always holds a *contiguous* slice of the
tenant chain: every tenant event with a ``tenant_seq`` from the first event at or after
``since`` to the last at or before ``until`` (or the chain's head), whatever dataset it
concerns. The manifest names the slice's ends (the first event's ``tenant_prev_hash`` and
the last event's ``tenant_hash``) and the tenant chain's head at export, and it is signed:
an event edited, deleted, inserted or moved breaks the chain, and one cut off either end no
longer meets the signed ends. For a dataset scope the manifest also lists, in
``events.dataset_event_seqs``, which events concern the dataset (its own events, its jobs'
and its releases'); the verifier recomputes that list from the events and the ledger. The
other events stay in the file: they belong to the same tenant, whose auditor may read the
whole log anyway, and without them there is nothing to show that none was left out.

The ledger and the certificates are a snapshot at export (the state now, not limited to the
time range), read in the same transaction as the events (``REPEATABLE READ`` on PostgreSQL;
SQLite serializes transactions), so the verifier can hold every certificate against its
ledger line: a succeeded job's charge is its certificate's epsilon, and each certificate
names its release, job and dataset.

A signature only proves who signed. A bundle re-signed by someone else verifies against the
key shipped inside it, so an auditor checks against the service's key from a trusted place
(``GET /audit/public-key``, ``dpsynth admin public-key``): ``dpsynth audit verify BUNDLE
--public-key service.pem``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core import ledger
from service.core.audit import GENESIS_HASH, AuditEvent, AuditHead, canonical_json, exported_row, tenant_chain
from service.core.bundle_format import (
    CERTIFICATES,
    EVENTS,
    FORMAT,
    LEDGER,
    MANIFEST,
    PUBLIC_KEY,
    SIGNATURE,
    concerns,
    public_certificate,
)
from service.core.errors import InvalidRequestError
from service.core.orm import Dataset, Job, Release, aware
from service.core.signing import ALGORITHM, Signer, encode_signature

_BATCH = 500


def audit_time(value: datetime) -> str:
    """A time as the audit log writes ``at`` (UTC, microseconds, ``Z``), so text order is time order.

    A time without a zone is taken as UTC.

    Raises:
        InvalidRequestError: the time cannot be written in UTC (e.g. year 1 with a positive offset).
    """
    try:
        utc = aware(value).astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidRequestError(f"the time {value.isoformat()} cannot be expressed in UTC") from None
    return utc.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else audit_time(value)


@dataclass(frozen=True, kw_only=True)
class Scope:
    """What a bundle covers: one tenant, optionally one dataset, optionally a time range of events.

    ``since`` and ``until`` are inclusive and limit the events; the ledger and certificates
    are always the current ones of every dataset in scope.
    """

    tenant_id: str
    dataset_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if (
            self.since is not None
            and self.until is not None
            and audit_time(self.since) > audit_time(self.until)
        ):
            raise InvalidRequestError(
                f"since ({audit_time(self.since)}) is after until ({audit_time(self.until)}); swap them"
            )

    def as_dict(self) -> dict[str, Any]:
        """The scope as the manifest states it."""
        return {
            "tenant_id": self.tenant_id,
            "dataset_id": self.dataset_id,
            "since": _iso(self.since),
            "until": _iso(self.until),
        }


def dataset_ledger(session: Session, dataset: Dataset) -> dict[str, Any]:
    """One dataset's ledger: its budget and every job line, with the ids of the job's releases."""
    jobs = session.scalars(select(Job).where(Job.dataset_id == dataset.id).order_by(Job.created_at, Job.id))
    releases: dict[str, list[str]] = {}
    query = select(Release.job_id, Release.id).where(Release.dataset_id == dataset.id)
    for job_id, release_id in session.execute(query.order_by(Release.created_at, Release.id)):
        releases.setdefault(job_id, []).append(release_id)
    return {
        "dataset_id": dataset.id,
        "name": dataset.name,
        "created_at": _iso(dataset.created_at),
        "raw_deleted_at": _iso(dataset.raw_deleted_at),
        "budget": ledger.budget_of(session, dataset).as_dict(),
        "lines": [
            {
                "job_id": job.id,
                "state": str(job.state),
                "epsilon_reserved": job.epsilon,
                "delta_reserved": job.delta,
                "epsilon_charged": job.epsilon_charged,
                "delta_charged": job.delta_charged,
                "created_at": _iso(job.created_at),
                "finished_at": _iso(job.finished_at),
                "release_ids": releases.get(job.id, []),
            }
            for job in jobs
        ],
    }


def _slice(session: Session, scope: Scope, head_seq: int) -> tuple[int, int]:
    """The first and last ``tenant_seq`` of the events in the time range (last < first: none)."""
    in_tenant = (AuditEvent.tenant_id == scope.tenant_id, AuditEvent.tenant_seq <= head_seq)
    first, last = 1, head_seq
    if scope.since is not None:
        found = session.scalar(
            select(func.min(AuditEvent.tenant_seq)).where(
                *in_tenant, AuditEvent.at >= audit_time(scope.since)
            )
        )
        first = head_seq + 1 if found is None else found
    if scope.until is not None:
        found = session.scalar(
            select(func.max(AuditEvent.tenant_seq)).where(
                *in_tenant, AuditEvent.at <= audit_time(scope.until)
            )
        )
        last = 0 if found is None else found
    return first, last


class _HashingWriter:
    """Counts and hashes what goes into one zip member."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self.fh.write(data)
        self.sha.update(data)
        self.size += len(data)

    def entry(self) -> dict[str, Any]:
        return {"sha256": self.sha.hexdigest(), "bytes": self.size}


def _add(archive: zipfile.ZipFile, files: dict[str, dict[str, Any]], name: str, data: bytes) -> None:
    archive.writestr(name, data)
    files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _pretty(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


@functools.cache
def service_version() -> dict[str, str]:
    """The running service's name, package version and code commit."""
    from models.certificate import code_commit  # the server has the engine loaded; the verifier needs none

    try:
        version = importlib.metadata.version("dpsynth")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"name": "dpsynth", "version": version, "code_commit": code_commit()}


def snapshot(session: Session) -> None:
    """Make the rest of this transaction read one snapshot (call it before any query).

    PostgreSQL's default (``READ COMMITTED``) would let a job finish between reading the
    ledger and the certificates; SQLite's transactions here are already serialized.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def write_bundle(
    session: Session, out: IO[bytes], *, scope: Scope, signer: Signer, actor: str
) -> dict[str, Any]:
    """Write the bundle of ``scope`` as a zip to ``out`` (seekable); returns its manifest.

    Run it in a transaction that started with :func:`snapshot`.

    Raises:
        InvalidRequestError: ``scope.dataset_id`` is not one of the tenant's datasets.
    """
    datasets_query = select(Dataset).where(Dataset.tenant_id == scope.tenant_id)
    if scope.dataset_id is not None:
        datasets_query = datasets_query.where(Dataset.id == scope.dataset_id)
    datasets = list(session.scalars(datasets_query.order_by(Dataset.created_at, Dataset.id)))
    if scope.dataset_id is not None and not datasets:
        raise InvalidRequestError(f"no dataset {scope.dataset_id!r} in this tenant")
    chain = tenant_chain(scope.tenant_id)
    head = session.get(AuditHead, chain, populate_existing=True)
    head_seq, head_hash = (head.seq, head.hash) if head is not None else (0, GENESIS_HASH)
    ledgers = [dataset_ledger(session, dataset) for dataset in datasets]
    job_ids = {line["job_id"] for entry in ledgers for line in entry["lines"]}
    release_ids = {rid for entry in ledgers for line in entry["lines"] for rid in line["release_ids"]}
    files: dict[str, dict[str, Any]] = {}
    events: dict[str, Any] = {"count": 0, "first": None, "last": None, "dataset_event_seqs": None}
    marked: list[int] = []
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open(EVENTS, "w", force_zip64=True) as member:
            writer = _HashingWriter(member)
            first, last = _slice(session, scope, head_seq)
            query = select(AuditEvent).where(
                AuditEvent.tenant_id == scope.tenant_id,
                AuditEvent.tenant_seq >= first,
                AuditEvent.tenant_seq <= last,
            )
            for event in session.scalars(
                query.order_by(AuditEvent.seq), execution_options={"yield_per": _BATCH}
            ):
                row = exported_row(event)
                writer.write((canonical_json(row) + "\n").encode("utf-8"))
                if events["first"] is None:
                    events["first"] = {
                        "tenant_seq": row["tenant_seq"],
                        "tenant_prev_hash": row["tenant_prev_hash"],
                    }
                events["last"] = {"tenant_seq": row["tenant_seq"], "tenant_hash": row["tenant_hash"]}
                events["count"] += 1
                if scope.dataset_id is not None and concerns(row, scope.dataset_id, job_ids, release_ids):
                    marked.append(row["tenant_seq"])
        files[EVENTS] = writer.entry()
        if scope.dataset_id is not None:
            events["dataset_event_seqs"] = marked
        _add(archive, files, LEDGER, _pretty({"datasets": ledgers}))
        certificates = session.execute(
            select(Release.id, Release.certificate)
            .where(Release.dataset_id.in_([d.id for d in datasets]))
            .order_by(Release.created_at, Release.id)
        )
        for release_id, certificate in certificates:
            _add(archive, files, f"{CERTIFICATES}{release_id}.json", _pretty(public_certificate(certificate)))
        _add(archive, files, PUBLIC_KEY, signer.public_pem())
        manifest = {
            "format": FORMAT,
            "scope": scope.as_dict(),
            "generated_at": audit_time(datetime.now(UTC)),
            "generated_by": actor,
            "service": service_version(),
            "chain": {"name": chain, "head": {"seq": head_seq, "hash": head_hash}},
            "events": events,
            "counts": {
                "events": events["count"],
                "datasets": len(ledgers),
                "jobs": len(job_ids),
                "releases": len(release_ids),
                "certificates": sum(name.startswith(CERTIFICATES) for name in files),
            },
            "files": files,
            "public_key": {"algorithm": ALGORITHM, "fingerprint": signer.fingerprint, "file": PUBLIC_KEY},
        }
        manifest_bytes = _pretty(manifest)
        archive.writestr(MANIFEST, manifest_bytes)
        archive.writestr(SIGNATURE, encode_signature(signer.sign(manifest_bytes)))
    return manifest
