"""Verifying the audit log offline (an exported JSONL or CSV file) and in the database.

See ``audit.py`` for the chains. Limits: verification finds any edited, deleted,
inserted or reordered event, but not events cut off the end of an export, since nothing
after them is left to disagree; compare ``VerifyResult.head_hash`` with a published head,
or verify a signed evidence bundle (``bundle_verify.py``), which signs its ends.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.audit import (
    GENESIS_HASH,
    GLOBAL_CHAIN,
    INT_FIELDS,
    NULLABLE_FIELDS,
    ROW_FIELDS,
    AuditHead,
    canonical_json,
    chain_hash,
    event_record,
    events_in_order,
    exported_row,
    tenant_chain,
)

_TYPES = dict.fromkeys(ROW_FIELDS, str) | dict.fromkeys(INT_FIELDS, int) | {"details": dict}
_MAX_PROBLEMS = 50


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


def _unescape(cell: str) -> str:
    return cell[1:] if cell.startswith("'") else cell


@dataclass
class ChainChecker:
    """Walks rows in order, checking links on the global or on the tenant chain, and every hash."""

    check_global: bool
    events: int = 0
    problems: list[str] = field(default_factory=list)
    head: str | None = None
    chain: str | None = None
    ends: dict[str, tuple[int, str]] = field(default_factory=dict)  # chain -> last (seq, hash)

    @classmethod
    def for_slice(cls, tenant_id: str | None, *, after_seq: int, after_hash: str) -> ChainChecker:
        """A checker for a contiguous slice of one tenant chain that follows ``(after_seq, after_hash)``."""
        chain = tenant_chain(tenant_id)
        return cls(check_global=False, chain=chain, ends={chain: (after_seq, after_hash)})

    def problem(self, where: str, text: str) -> None:
        """Record a problem at ``where`` (at most 50 are kept)."""
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
            if chain_hash(row[prefix + "prev_hash"], record_json) != row[prefix + "hash"]:
                return f"{prefix}hash does not match the event's content: the event was edited"
        return None

    def result(self) -> VerifyResult:
        """What was found."""
        chain = GLOBAL_CHAIN if self.check_global else self.chain or GLOBAL_CHAIN
        return VerifyResult(not self.problems, self.events, self.problems, self.head, chain)


def _shape_problem(row: dict[str, Any]) -> str | None:
    if set(row) != set(ROW_FIELDS):
        return "is not an audit event: its fields are not " + ", ".join(ROW_FIELDS)
    for name, value in row.items():
        if not (isinstance(value, _TYPES[name]) and not isinstance(value, bool)) and not (
            value is None and name in NULLABLE_FIELDS
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
                row.update({name: int(row[name]) for name in INT_FIELDS}, details=json.loads(row["details"]))
            except ValueError:
                yield where, "has a seq that is not a number or details that are not JSON"
                continue
            yield where, row | {name: row[name] or None for name in NULLABLE_FIELDS}


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
    checker = ChainChecker(check_global=mode == "global")
    for where, row in read(path):
        checker.feed(where, row)
    return checker.result()


def verify_chain(session: Session) -> VerifyResult:
    """Verify every chain in the database, and that each ``audit_head`` row matches its chain's end."""
    checker = ChainChecker(check_global=True)
    for event in events_in_order(session, None):
        try:
            row = exported_row(event)
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
