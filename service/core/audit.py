"""The append-only, hash-chained audit log: tables, append and export (JSONL, CSV).

Verification lives in ``audit_verify.py``.

Every event is hashed into two chains over the same record (:func:`event_record`, every
field but the two hashes, so it covers both prev hashes)::

    hash        = sha256(prev_hash        || canonical_json(record))   # global chain, seq 1, 2, 3…
    tenant_hash = sha256(tenant_prev_hash || canonical_json(record))   # tenant chain, tenant_seq 1, 2, 3…

A full export verifies on the global chain. An export filtered to one tenant is a
subsequence of the global chain, so it verifies on that tenant's own chain instead;
system events (``tenant_id`` None) form their own tenant chain. A chain starts from 64
zeros. ``audit_head`` holds one row per chain (:data:`GLOBAL_CHAIN`, or
:func:`tenant_chain`) with its last seq and hash. An append locks the global head row
first (``SELECT … FOR UPDATE``; on SQLite ``BEGIN IMMEDIATE`` already serializes
writers), so all appends are serialized and the tenant head behind it needs no lock order.

Limits: verification finds any edited, deleted, inserted or reordered event, but not
events cut off the end of an export, since nothing after them is left to disagree.
Compare ``VerifyResult.head_hash`` with :func:`head_hash` from the database, or export a
signed evidence bundle (``bundles.py``), whose manifest signs the slice's ends and the chain
head at export. In the database itself, ``audit_verify.verify_chain``
also checks the head rows, which catches a truncated table unless the heads were
rewritten too.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from sqlalchemy import Index, Integer, String, Text, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from service.core.db import Base

GENESIS_HASH = "0" * 64
GLOBAL_CHAIN = "global"
# Column order of exports; the record that is hashed is every field but the two hashes.
ROW_FIELDS = (
    "seq", "at", "tenant_id", "actor", "action", "object_type", "object_id", "details",
    "prev_hash", "hash", "tenant_seq", "tenant_prev_hash", "tenant_hash",
)  # fmt: skip
RECORD_FIELDS = tuple(f for f in ROW_FIELDS if f not in ("hash", "tenant_hash"))
NULLABLE_FIELDS = ("tenant_id", "object_type", "object_id")
INT_FIELDS = ("seq", "tenant_seq")
# Spreadsheets run cells starting with these as formulas; "'" is included so escaping is invertible.
_FORMULA_STARTS = frozenset("=+-@\t\r'")
_BATCH = 500


class AuditEvent(Base):
    """One audit event; rows are only ever inserted, by :func:`append`."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_tenant_id_seq", "tenant_id", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(32))  # UTC, ISO 8601 with microseconds and "Z"
    tenant_id: Mapped[str | None] = mapped_column(String(128))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str | None] = mapped_column(String(64))
    object_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[str] = mapped_column(Text)  # canonical JSON of an object
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    tenant_seq: Mapped[int] = mapped_column(Integer)
    tenant_prev_hash: Mapped[str] = mapped_column(String(64))
    tenant_hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The last seq and hash of one chain; its row is the lock point for appends."""

    __tablename__ = "audit_head"

    chain: Mapped[str] = mapped_column(String(160), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


def canonical_json(obj: Any) -> str:
    """The one JSON text of ``obj`` that is hashed: sorted keys, no spaces, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def tenant_chain(tenant_id: str | None) -> str:
    """The name of a tenant's chain in ``audit_head``; system events (None) use ``"tenant:"``."""
    return f"tenant:{tenant_id or ''}"


def event_record(event: AuditEvent | Mapping[str, Any]) -> dict[str, Any]:
    """The exact record both hashes cover, from a row or an exported event (details parsed)."""
    if isinstance(event, AuditEvent):
        record = {name: getattr(event, name) for name in RECORD_FIELDS}
        record["details"] = json.loads(event.details)
        return record
    return {name: event[name] for name in RECORD_FIELDS}


def chain_hash(prev_hash: str, record_json: str) -> str:
    """The hash of an event: SHA-256 of the previous hash and the event's canonical record."""
    return hashlib.sha256((prev_hash + record_json).encode("utf-8")).hexdigest()


def _lock_head(session: Session, chain: str) -> AuditHead:
    # populate_existing: a long-lived session must not reuse a head row loaded in an earlier transaction.
    stmt = select(AuditHead).where(AuditHead.chain == chain).with_for_update()
    stmt = stmt.execution_options(populate_existing=True)
    head = session.scalars(stmt).one_or_none()
    if head is None:
        # The first append to a chain has no row to lock, and two may race on Postgres: the
        # loser's insert fails after the winner commits and it then locks the winner's row.
        try:
            with session.begin_nested():
                session.add(AuditHead(chain=chain, seq=0, hash=GENESIS_HASH))
        except IntegrityError:
            pass
        head = session.scalars(stmt).one()
    return head


def append(
    session: Session,
    *,
    action: str,
    actor: str,
    tenant_id: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event inside the caller's transaction (it does not commit).

    Empty ``object_type`` and ``object_id`` are stored as None, which CSV cannot tell apart.

    Raises:
        TypeError: ``details`` is not a dict of JSON values (no sets, objects, NaN or infinity).
        ValueError: ``tenant_id`` is the empty string; use None for system events.
    """
    if tenant_id == "":
        raise ValueError("tenant_id '' is not a tenant; pass None for a system event")
    if not isinstance(details, dict | None):
        raise TypeError(f"audit details must be a dict, got {type(details).__name__}")
    try:
        details_json = canonical_json(details or {})
    except (TypeError, ValueError) as exc:
        raise TypeError(f"audit details must hold only JSON values: {exc}") from exc
    glob = _lock_head(session, GLOBAL_CHAIN)  # always first: one lock order, no deadlocks
    tenant = _lock_head(session, tenant_chain(tenant_id))
    event = AuditEvent(
        seq=glob.seq + 1,
        at=datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        object_type=object_type or None,
        object_id=object_id or None,
        details=details_json,
        prev_hash=glob.hash,
        tenant_seq=tenant.seq + 1,
        tenant_prev_hash=tenant.hash,
    )
    record_json = canonical_json(event_record(event))
    event.hash = chain_hash(glob.hash, record_json)
    event.tenant_hash = chain_hash(tenant.hash, record_json)
    session.add(event)
    glob.seq, glob.hash = event.seq, event.hash
    tenant.seq, tenant.hash = event.tenant_seq, event.tenant_hash
    session.flush()
    return event


def head_hash(session: Session, chain: str = GLOBAL_CHAIN) -> str | None:
    """The stored head hash of ``chain``, to compare with ``VerifyResult.head_hash``."""
    head = session.get(AuditHead, chain, populate_existing=True)
    return head.hash if head is not None and head.seq > 0 else None


def events_in_order(session: Session, tenant_id: str | None) -> Iterator[AuditEvent]:
    """Every event (or one tenant's) by seq, loaded in batches."""
    stmt = select(AuditEvent).order_by(AuditEvent.seq)
    if tenant_id is not None:
        stmt = stmt.where(AuditEvent.tenant_id == tenant_id)
    yield from session.scalars(stmt, execution_options={"yield_per": _BATCH})


def recent(session: Session, tenant_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
    """A tenant's newest ``limit`` events, newest first, as exported (for reading on a page)."""
    stmt = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id).order_by(AuditEvent.seq.desc())
    return [exported_row(event) for event in session.scalars(stmt.limit(limit))]


def exported_row(event: AuditEvent) -> dict[str, Any]:
    """An event as exported: its record and both hashes."""
    return event_record(event) | {"hash": event.hash, "tenant_hash": event.tenant_hash}


def export_jsonl(session: Session, out: TextIO, *, tenant_id: str | None = None) -> int:
    """Write events in seq order, one canonical JSON object per line; returns how many.

    Without ``tenant_id`` every event is written (verifies on the global chain); with it,
    only that tenant's events (verifies on its tenant chain).
    """
    count = 0
    for event in events_in_order(session, tenant_id):
        out.write(canonical_json(exported_row(event)) + "\n")
        count += 1
    return count


def _escape(cell: str) -> str:
    return "'" + cell if cell and cell[0] in _FORMULA_STARTS else cell


def export_csv(session: Session, out: TextIO, *, tenant_id: str | None = None) -> int:
    """Write events as CSV with a header row (open ``out`` with ``newline=""``); returns how many.

    Formula injection: a cell starting with ``=``, ``+``, ``-``, ``@``, tab, carriage
    return or ``'`` gets one leading ``'``, so spreadsheets show it as text. Every cell that
    starts with ``'`` was escaped, so ``audit_verify.verify_file`` strips exactly one ``'`` from
    such cells and the hashes still verify. None is written as an empty cell and details
    as canonical JSON. ``tenant_id`` filters as in :func:`export_jsonl`.
    """
    writer = csv.writer(out)
    writer.writerow(ROW_FIELDS)
    count = 0
    for event in events_in_order(session, tenant_id):
        cells = (getattr(event, name) for name in ROW_FIELDS)  # details are stored as canonical JSON
        writer.writerow([_escape("" if cell is None else str(cell)) for cell in cells])
        count += 1
    return count
