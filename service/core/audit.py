"""The append-only, hash-chained audit log: append, export (JSONL, CSV) and verify.

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
Compare ``VerifyResult.head_hash`` with :func:`head_hash` from the database or with a
published head (issue 7 adds signed heads). In the database itself, :func:`verify_chain`
also checks the head rows, which catches a truncated table unless the heads were
rewritten too.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

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
_NULLABLE = ("tenant_id", "object_type", "object_id")
_INTS = ("seq", "tenant_seq")
_TYPES = dict.fromkeys(ROW_FIELDS, str) | dict.fromkeys(_INTS, int) | {"details": dict}
# Spreadsheets run cells starting with these as formulas; "'" is included so escaping is invertible.
_FORMULA_STARTS = frozenset("=+-@\t\r'")
_MAX_PROBLEMS = 50
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


@dataclass
class VerifyResult:
    """The outcome of a verification.

    Attributes:
        ok: True when no problem was found.
        events: How many events were read.
        problems: Plain-words problems in file order, the first one first (at most 50 listed).
        head_hash: The hash of the last event on the verified chain; None for no events.
        chain: The chain verified: ``GLOBAL_CHAIN`` or a :func:`tenant_chain` name.
    """

    ok: bool
    events: int
    problems: list[str]
    head_hash: str | None
    chain: str = GLOBAL_CHAIN


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


def _digest(prev_hash: str, record_json: str) -> str:
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
    event.hash = _digest(glob.hash, record_json)
    event.tenant_hash = _digest(tenant.hash, record_json)
    session.add(event)
    glob.seq, glob.hash = event.seq, event.hash
    tenant.seq, tenant.hash = event.tenant_seq, event.tenant_hash
    session.flush()
    return event


def head_hash(session: Session, chain: str = GLOBAL_CHAIN) -> str | None:
    """The stored head hash of ``chain``, to compare with ``VerifyResult.head_hash``."""
    head = session.get(AuditHead, chain, populate_existing=True)
    return head.hash if head is not None and head.seq > 0 else None


def _events(session: Session, tenant_id: str | None) -> Iterator[AuditEvent]:
    stmt = select(AuditEvent).order_by(AuditEvent.seq)
    if tenant_id is not None:
        stmt = stmt.where(AuditEvent.tenant_id == tenant_id)
    yield from session.scalars(stmt, execution_options={"yield_per": _BATCH})


def _row(event: AuditEvent) -> dict[str, Any]:  # an event as exported: its record and both hashes
    return event_record(event) | {"hash": event.hash, "tenant_hash": event.tenant_hash}


def export_jsonl(session: Session, out: TextIO, *, tenant_id: str | None = None) -> int:
    """Write events in seq order, one canonical JSON object per line; returns how many.

    Without ``tenant_id`` every event is written (verifies on the global chain); with it,
    only that tenant's events (verifies on its tenant chain).
    """
    count = 0
    for event in _events(session, tenant_id):
        out.write(canonical_json(_row(event)) + "\n")
        count += 1
    return count


def _escape(cell: str) -> str:
    return "'" + cell if cell and cell[0] in _FORMULA_STARTS else cell


def _unescape(cell: str) -> str:
    return cell[1:] if cell.startswith("'") else cell


def export_csv(session: Session, out: TextIO, *, tenant_id: str | None = None) -> int:
    """Write events as CSV with a header row (open ``out`` with ``newline=""``); returns how many.

    Formula injection: a cell starting with ``=``, ``+``, ``-``, ``@``, tab, carriage
    return or ``'`` gets one leading ``'``, so spreadsheets show it as text. Every cell that
    starts with ``'`` was escaped, so :func:`verify_file` strips exactly one ``'`` from
    such cells and the hashes still verify. None is written as an empty cell and details
    as canonical JSON. ``tenant_id`` filters as in :func:`export_jsonl`.
    """
    writer = csv.writer(out)
    writer.writerow(ROW_FIELDS)
    count = 0
    for event in _events(session, tenant_id):
        cells = (getattr(event, name) for name in ROW_FIELDS)  # details are stored as canonical JSON
        writer.writerow([_escape("" if cell is None else str(cell)) for cell in cells])
        count += 1
    return count


@dataclass
class _Checker:
    """Walks rows in order, checking links on the global or on the tenant chain, and every hash."""

    check_global: bool
    events: int = 0
    problems: list[str] = field(default_factory=list)
    head: str | None = None
    chain: str | None = None
    ends: dict[str, tuple[int, str]] = field(default_factory=dict)  # chain -> last (seq, hash)

    def problem(self, where: str, text: str) -> None:
        if len(self.problems) <= _MAX_PROBLEMS:  # a file of garbage must not fill memory
            text = f"{where}: {text}" if where else text
            self.problems.append(text if len(self.problems) < _MAX_PROBLEMS else "and more problems")

    def feed(self, where: str, row: dict[str, Any] | str) -> None:
        """Check the next event; ``row`` is a problem text where the reader found no event."""
        if isinstance(row, str):
            self.problem(where, row)
            return
        if (shape_problem := _shape_problem(row)) is not None:
            self.problem(where, shape_problem)
            return
        where = f"{where}, seq {row['seq']}" if where else f"seq {row['seq']}"
        chain = tenant_chain(row["tenant_id"])
        self.chain = self.chain or chain
        links = [("tenant_", chain)]
        if self.check_global:
            links.insert(0, ("", GLOBAL_CHAIN))
        elif chain != self.chain:
            self.problem(where, f"belongs to {chain!r}, but this tenant export is of {self.chain!r}")
        text = self._link_problem(row, links) or self._hash_problem(row)
        if text:
            self.problem(where, text)
        self.advance(row)

    def advance(self, row: Mapping[str, Any]) -> None:
        """Go on from this event's own seqs and hashes, so that each break is reported once."""
        self.events += 1
        self.ends[GLOBAL_CHAIN] = (row["seq"], row["hash"])
        self.ends[tenant_chain(row["tenant_id"])] = (row["tenant_seq"], row["tenant_hash"])
        self.head = row["hash"] if self.check_global else row["tenant_hash"]

    def _link_problem(self, row: dict[str, Any], links: list[tuple[str, str]]) -> str | None:
        for prefix, name in links:
            last_seq, last_hash = self.ends.get(name, (0, GENESIS_HASH))
            if row[prefix + "seq"] != last_seq + 1:
                return (
                    f"{prefix}seq {row[prefix + 'seq']} where {last_seq + 1} was expected: "
                    "an event was deleted, inserted or moved here"
                )
            if row[prefix + "prev_hash"] != last_hash:
                return f"{prefix}prev_hash is not the hash of the event before it: the chain is broken here"
        return None

    def _hash_problem(self, row: dict[str, Any]) -> str | None:
        try:
            record_json = canonical_json(event_record(row))
        except ValueError:
            return "details hold NaN or infinity, which no event can: the event was edited"
        for prefix in ("", "tenant_"):
            if _digest(row[prefix + "prev_hash"], record_json) != row[prefix + "hash"]:
                return f"{prefix}hash does not match the event's content: the event was edited"
        return None

    def result(self) -> VerifyResult:
        chain = GLOBAL_CHAIN if self.check_global else self.chain or GLOBAL_CHAIN
        return VerifyResult(not self.problems, self.events, self.problems, self.head, chain)


def _shape_problem(row: dict[str, Any]) -> str | None:
    if set(row) != set(ROW_FIELDS):
        return "is not an audit event: its fields are not " + ", ".join(ROW_FIELDS)
    for name, value in row.items():
        if not (isinstance(value, _TYPES[name]) and not isinstance(value, bool)) and not (
            value is None and name in _NULLABLE
        ):
            return f"field {name} has a value of the wrong type: {value!r}"
    return None


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any] | str]]:
    with path.open(encoding="utf-8", errors="replace") as lines:  # bad bytes fail the hash check
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                yield f"line {number}", row if isinstance(row, dict) else "is not a JSON object"


def _read_csv(path: Path) -> Iterator[tuple[str, dict[str, Any] | str]]:
    with path.open(encoding="utf-8", errors="replace", newline="") as file:
        reader = csv.reader(file)
        if (header := next(reader, None)) is None:
            return
        if tuple(header) != ROW_FIELDS:
            yield "line 1", "the header is not " + ",".join(ROW_FIELDS)
            return
        for cells in reader:
            where = f"line {reader.line_num}"
            if len(cells) != len(ROW_FIELDS):
                yield where, f"has {len(cells)} cells where {len(ROW_FIELDS)} were expected"
                continue
            row: dict[str, Any] = dict(zip(ROW_FIELDS, map(_unescape, cells), strict=True))
            try:
                row.update({name: int(row[name]) for name in _INTS}, details=json.loads(row["details"]))
            except ValueError:
                yield where, "has a seq that is not a number or details that are not JSON"
                continue
            yield where, row | {name: row[name] or None for name in _NULLABLE}


def verify_file(path: str | Path, *, mode: Literal["auto", "global", "tenant"] = "auto") -> VerifyResult:
    """Verify an export from :func:`export_jsonl` or :func:`export_csv`; needs no database.

    The format comes from the suffix (``.csv``, ``.jsonl``), else from the first character.
    ``mode="auto"`` verifies a file holding one tenant's events on that tenant chain and
    any other file on the global chain; pass ``mode`` to insist on one. Events cut off the
    end cannot be detected here: compare ``head_hash`` with the database's or a published head.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        read = _read_csv
    elif path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        read = _read_jsonl
    else:
        with path.open(encoding="utf-8", errors="replace") as file:
            read = _read_jsonl if file.read(4096).lstrip().startswith("{") else _read_csv
    if mode == "auto":
        tenants = {repr(row.get("tenant_id")) for _, row in read(path) if isinstance(row, dict)}
        mode = "tenant" if len(tenants) == 1 else "global"
    checker = _Checker(check_global=mode == "global")
    for where, row in read(path):
        checker.feed(where, row)
    return checker.result()


def verify_chain(session: Session) -> VerifyResult:
    """Verify every chain in the database, and that each ``audit_head`` row matches its chain's end."""
    checker = _Checker(check_global=True)
    for event in _events(session, None):
        try:
            row = _row(event)
        except ValueError:  # details that json.loads refuses
            checker.problem(f"seq {event.seq}", "details are not JSON: the event was edited")
            checker.advance({name: getattr(event, name) for name in ROW_FIELDS if name != "details"})
        else:
            checker.feed("", row)
    ends = dict(checker.ends)
    for head in session.scalars(select(AuditHead).execution_options(populate_existing=True)):
        last_seq, last_hash = ends.pop(head.chain, (0, GENESIS_HASH))
        if (head.seq, head.hash) != (last_seq, last_hash):
            ends_at = f"the chain ends at seq {last_seq}" + (" with another hash" * (last_seq == head.seq))
            checker.problem(
                f"head of {head.chain!r}",
                f"says seq {head.seq} but {ends_at}: events were removed or altered",
            )
    for chain in ends:
        checker.problem(f"chain {chain!r}", "has events but no head row")
    return checker.result()
