from __future__ import annotations

import csv
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.core import audit
from service.core.audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditHead,
    append,
    canonical_json,
    event_record,
    export_csv,
    export_jsonl,
    head_hash,
    tenant_chain,
)
from service.core.audit_verify import VerifyResult, verify_chain, verify_file
from service.core.db import Base, make_engine, make_sessionmaker, transaction

FORMATS = ["jsonl", "csv"]


def _factory(path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def _populate(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        append(session, action="auth.failure", actor="anonymous", details={"reason": "bad key"})
        for i, tenant in enumerate(["acme", "globex", "acme", "globex", "acme", "acme", "globex"]):
            append(
                session,
                action="dataset.upload" if i == 0 else "job.created",
                actor=f"key:k{i}",
                tenant_id=tenant,
                object_type="dataset",
                object_id=f"ds-{i}",
                details={"rows": 4242 + i, "epsilon": 1.5, "nested": {"b": [1, 2], "a": None}, "név": "ü"},
            )
    with transaction(factory) as session:  # a second transaction continues the same chains
        append(session, action="release.download", actor="key:k9", tenant_id="acme", object_id="rel-1")
        append(session, action="system.start", actor="system")


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    yield from _factory(tmp_path / "audit.db")


@pytest.fixture
def populated(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    _populate(factory)
    return factory


def _export(factory: sessionmaker[Session], path: Path, tenant_id: str | None = None) -> Path:
    exporter = export_csv if path.suffix == ".csv" else export_jsonl
    with transaction(factory) as session, path.open("w", encoding="utf-8", newline="") as out:
        exporter(session, out, tenant_id=tenant_id)
    return path


def _lines(path: Path) -> tuple[list[str], list[str]]:
    """(header lines, event lines) of an export whose values hold no newlines."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    return (lines[:1], lines[1:]) if path.suffix == ".csv" else ([], lines)


def _write(path: Path, header: list[str], lines: list[str]) -> Path:
    path.write_text("".join(header + lines), encoding="utf-8")
    return path


def _all_events(session: Session) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))


def _rechain(rows: list[dict[str, Any]]) -> None:
    """What a forger who knows the scheme does: recompute every hash of both chains."""
    last, tenants = (0, GENESIS_HASH), dict[str | None, tuple[int, str]]()
    for row in rows:
        tlast = tenants.get(row["tenant_id"], (0, GENESIS_HASH))
        row.update(seq=last[0] + 1, prev_hash=last[1], tenant_seq=tlast[0] + 1, tenant_prev_hash=tlast[1])
        text = canonical_json(event_record(row))
        row["hash"] = hashlib.sha256((row["prev_hash"] + text).encode()).hexdigest()
        row["tenant_hash"] = hashlib.sha256((row["tenant_prev_hash"] + text).encode()).hexdigest()
        last, tenants[row["tenant_id"]] = (row["seq"], row["hash"]), (row["tenant_seq"], row["tenant_hash"])


def test_append_chains_events(populated: sessionmaker[Session]) -> None:
    with transaction(populated) as session:
        events = _all_events(session)
        assert [e.seq for e in events] == list(range(1, 11))
        assert events[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:], strict=False))
        acme = [e for e in events if e.tenant_id == "acme"]
        assert [e.tenant_seq for e in acme] == [1, 2, 3, 4, 5]
        assert acme[0].tenant_prev_hash == GENESIS_HASH
        assert all(b.tenant_prev_hash == a.tenant_hash for a, b in zip(acme, acme[1:], strict=False))
        system = [e for e in events if e.tenant_id is None]
        assert [(e.seq, e.tenant_seq) for e in system] == [(1, 1), (10, 2)]
        assert events[0].at.endswith("Z") and len(events[0].at) == len("2024-01-01T00:00:00.000000Z")
        assert json.loads(events[1].details)["nested"] == {"a": None, "b": [1, 2]}
        assert head_hash(session) == events[-1].hash
        assert head_hash(session, tenant_chain("acme")) == acme[-1].tenant_hash
        assert head_hash(session, tenant_chain("nobody")) is None
        assert verify_chain(session).ok


def test_append_runs_in_the_callers_transaction(populated: sessionmaker[Session]) -> None:
    with populated() as session:
        session.begin()
        append(session, action="job.failed", actor="system", tenant_id="acme")
        session.rollback()
    with transaction(populated) as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 10
        assert verify_chain(session).ok
        assert append(session, action="job.failed", actor="system", tenant_id="acme").seq == 11


def test_append_from_a_long_lived_session(factory: sessionmaker[Session]) -> None:
    with factory() as one, factory() as other:
        with one.begin():
            append(one, action="job.created", actor="system", tenant_id="acme")
            heads = list(one.scalars(select(AuditHead)))  # kept alive in one's identity map
        with other.begin():
            append(other, action="job.running", actor="system", tenant_id="acme")
        with one.begin():
            event = append(one, action="job.succeeded", actor="system", tenant_id="acme")
        assert (event.seq, event.tenant_seq) == (3, 3) and len(heads) == 2
        with one.begin():
            assert verify_chain(one).ok


@pytest.mark.parametrize("details", [{"x": {1, 2}}, {"x": object()}, {"x": float("nan")}, ["a", "list"]])
def test_append_rejects_non_json_details(factory: sessionmaker[Session], details: Any) -> None:
    with transaction(factory) as session:
        with pytest.raises(TypeError, match="audit details must"):
            append(session, action="schema.update", actor="system", details=details)
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 0


def test_append_rejects_empty_tenant(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session, pytest.raises(ValueError, match="tenant_id '' is not a tenant"):
        append(session, action="job.created", actor="system", tenant_id="")


def test_verify_chain_detects_database_tampering(populated: sessionmaker[Session]) -> None:
    with transaction(populated) as session:
        session.execute(update(AuditEvent).where(AuditEvent.seq == 4).values(details='{"rows":1}'))
    with transaction(populated) as session:
        result = verify_chain(session)
    assert not result.ok and result.problems == [
        "seq 4: hash does not match the event's content: the event was edited"
    ]


def test_verify_chain_reports_details_that_are_not_json(populated: sessionmaker[Session]) -> None:
    with transaction(populated) as session:
        session.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(details="{oops"))
        session.execute(update(AuditEvent).where(AuditEvent.seq == 5).values(details='{"x":NaN}'))
        result = verify_chain(session)
    assert result.problems == [
        "seq 3: details are not JSON: the event was edited",
        "seq 5: details hold NaN or infinity, which no event can: the event was edited",
    ]


def test_verify_chain_detects_a_truncated_table(populated: sessionmaker[Session]) -> None:
    with transaction(populated) as session:
        session.execute(delete(AuditEvent).where(AuditEvent.seq == 10))
    with transaction(populated) as session:
        result = verify_chain(session)
    assert not result.ok
    assert result.problems[0].startswith("head of 'global': says seq 10 but the chain ends at seq 9")


def test_verify_empty(factory: sessionmaker[Session], tmp_path: Path) -> None:
    with transaction(factory) as session:
        assert verify_chain(session) == VerifyResult(True, 0, [], None)
        assert head_hash(session) is None
    for fmt in FORMATS:
        assert verify_file(_export(factory, tmp_path / f"empty.{fmt}")) == VerifyResult(True, 0, [], None)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_verifies(populated: sessionmaker[Session], tmp_path: Path, fmt: str) -> None:
    full = verify_file(_export(populated, tmp_path / f"all.{fmt}"))
    acme = verify_file(_export(populated, tmp_path / f"acme.{fmt}", tenant_id="acme"))
    with transaction(populated) as session:
        assert full == VerifyResult(True, 10, [], head_hash(session), "global")
        assert acme == VerifyResult(True, 5, [], head_hash(session, "tenant:acme"), "tenant:acme")
    # A tenant export is a subsequence of the global chain, so it cannot verify on it.
    as_global = verify_file(tmp_path / f"acme.{fmt}", mode="global")
    assert not as_global.ok and "seq 2 where 1 was expected" in as_global.problems[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_verify_file_sniffs_the_format(populated: sessionmaker[Session], tmp_path: Path, fmt: str) -> None:
    path = _export(populated, tmp_path / f"all.{fmt}")
    assert verify_file(path.rename(tmp_path / "export.txt")).ok


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (
            "edit_detail",
            "line {edited}, seq 4: hash does not match the event's content: the event was edited",
        ),
        (
            "edit_action",
            "line {edited}, seq 2: hash does not match the event's content: the event was edited",
        ),
        (
            "delete",
            "line {edited}, seq 5: seq 5 where 4 was expected: an event was deleted, inserted or moved",
        ),
        ("swap", "line {edited}, seq 7: seq 7 where 6 was expected: an event was deleted, inserted or moved"),
    ],
)
def test_verify_file_detects_tampering(
    populated: sessionmaker[Session], tmp_path: Path, fmt: str, tamper: str, expected: str
) -> None:
    header, lines = _lines(_export(populated, tmp_path / f"all.{fmt}"))
    if tamper == "edit_detail":
        index, lines[3] = 3, lines[3].replace("4244", "4245")
    elif tamper == "edit_action":
        index, lines[1] = 1, lines[1].replace("dataset.upload", "dataset.delete")
    elif tamper == "delete":
        index = 3
        del lines[3]
    else:
        index, lines[5], lines[6] = 5, lines[6], lines[5]
    result = verify_file(_write(tmp_path / f"tampered.{fmt}", header, lines))
    assert not result.ok
    assert result.problems[0].startswith(expected.format(edited=index + 1 + len(header)))


def test_verify_file_detects_a_forged_insertion(populated: sessionmaker[Session], tmp_path: Path) -> None:
    _, lines = _lines(_export(populated, tmp_path / "all.jsonl"))
    rows = [json.loads(line) for line in lines]
    forged = dict(rows[4], action="budget.update", details={"total_epsilon": 100})
    forged.update(seq=6, prev_hash=rows[4]["hash"], tenant_seq=rows[4]["tenant_seq"] + 1)
    forged["tenant_prev_hash"] = rows[4]["tenant_hash"]
    text = canonical_json(event_record(forged))
    forged["hash"] = hashlib.sha256((forged["prev_hash"] + text).encode()).hexdigest()
    forged["tenant_hash"] = hashlib.sha256((forged["tenant_prev_hash"] + text).encode()).hexdigest()
    lines.insert(5, canonical_json(forged) + "\n")
    result = verify_file(_write(tmp_path / "forged.jsonl", [], lines))
    assert not result.ok
    assert (
        result.problems[0]
        == "line 7, seq 6: seq 6 where 7 was expected: an event was deleted, inserted or moved here"
    )


@pytest.mark.parametrize("tenant_id", [None, "acme"])
def test_a_full_rewrite_verifies_but_its_head_differs(
    populated: sessionmaker[Session], tmp_path: Path, tenant_id: str | None
) -> None:
    _, lines = _lines(_export(populated, tmp_path / "export.jsonl", tenant_id=tenant_id))
    rows = [json.loads(line) for line in lines]
    rows[2]["action"] = "dataset.raw_deleted"
    _rechain(rows)
    result = verify_file(_write(tmp_path / "rewritten.jsonl", [], [canonical_json(r) + "\n" for r in rows]))
    assert result.ok  # only a head kept elsewhere (the database, a signed head) can expose this
    with transaction(populated) as session:
        assert result.head_hash != head_hash(session, result.chain)


def test_csv_escapes_formulas_and_verifies(factory: sessionmaker[Session], tmp_path: Path) -> None:
    hostile = {
        "actor": "@evil",
        "action": "-cmd",
        "object_type": "\tdataset",
        "object_id": '=HYPERLINK("http://x.example","click")',
    }
    with transaction(factory) as session:
        append(session, tenant_id="+t", details={"note": "=1+2"}, **hostile)
        append(session, actor="'=already quoted", action="\rjob.created", tenant_id="+t")
        append(session, actor="key:k1", action="job.running", tenant_id="other")
    path = _export(factory, tmp_path / "all.csv")
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    assert all(not cell or cell[0] not in "=+-@\t\r" for row in rows for cell in row)
    assert rows[1][3:7] == ["'@evil", "'-cmd", "'\tdataset", "'" + hostile["object_id"]]
    assert rows[2][3:5] == ["''=already quoted", "'\rjob.created"]
    assert verify_file(path).ok
    assert verify_file(_export(factory, tmp_path / "t.csv", tenant_id="+t")).ok
    assert verify_file(_export(factory, tmp_path / "all.jsonl")).ok


def test_verify_file_reports_bad_bytes_and_nan(populated: sessionmaker[Session], tmp_path: Path) -> None:
    path = _export(populated, tmp_path / "all.jsonl")
    data = path.read_bytes()
    path.write_bytes(data.replace("név".encode(), b"n\xff\xfe", 1))
    assert verify_file(path).problems == [
        "line 2, seq 2: hash does not match the event's content: the event was edited"
    ]
    path.write_bytes(data.replace(b'"epsilon":1.5', b'"epsilon":NaN', 1))
    assert verify_file(path).problems == [
        "line 2, seq 2: details hold NaN or infinity, which no event can: the event was edited"
    ]


def test_verify_file_reports_malformed_lines(populated: sessionmaker[Session], tmp_path: Path) -> None:
    header, lines = _lines(_export(populated, tmp_path / "all.jsonl"))
    lines[2] = "not json\n"
    lines[4] = '{"seq": 5}\n'
    result = verify_file(_write(tmp_path / "bad.jsonl", header, lines))
    assert result.problems[:2] == [
        "line 3: is not a JSON object",
        "line 4, seq 4: seq 4 where 3 was expected: an event was deleted, inserted or moved here",
    ]
    assert result.problems[2].startswith("line 5: is not an audit event")
    header, lines = _lines(_export(populated, tmp_path / "all.csv"))
    result = verify_file(_write(tmp_path / "bad.csv", ["seq,hash\n"], lines))
    assert result.problems == ["line 1: the header is not " + ",".join(audit.ROW_FIELDS)]


def test_verify_file_in_tenant_mode_refuses_other_tenants(
    populated: sessionmaker[Session], tmp_path: Path
) -> None:
    result = verify_file(_export(populated, tmp_path / "all.jsonl"), mode="tenant")
    assert not result.ok and result.chain == "tenant:"
    assert (
        result.problems[0]
        == "line 2, seq 2: belongs to 'tenant:acme', but this tenant export is of 'tenant:'"
    )


def test_concurrent_appends_keep_one_gapless_chain(factory: sessionmaker[Session]) -> None:
    start, errors = threading.Barrier(8), []

    def work(worker: int) -> None:
        try:
            with factory() as session:  # one session over 25 transactions: heads must not go stale
                start.wait()
                for _ in range(25):
                    with session.begin():
                        append(
                            session, action="job.running", actor=f"key:w{worker}", tenant_id=f"t{worker % 3}"
                        )
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with transaction(factory) as session:
        events = _all_events(session)
        assert [e.seq for e in events] == list(range(1, 201))
        for tenant in ("t0", "t1", "t2"):
            seqs = [e.tenant_seq for e in events if e.tenant_id == tenant]
            assert seqs == list(range(1, len(seqs) + 1))
        assert verify_chain(session) == VerifyResult(True, 200, [], events[-1].hash)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], str, Path]]:
    directory = tmp_path_factory.mktemp("audit")
    for factory in _factory(directory / "audit.db"):
        _populate(factory)
        _, lines = _lines(_export(factory, directory / "all.jsonl"))
        with transaction(factory) as session:
            head = head_hash(session)
        assert head is not None
        yield lines, head, directory / "edited.jsonl"


@settings(max_examples=40, deadline=None, database=None)
@given(data=st.data())
def test_verify_file_detects_any_deleted_or_moved_event(
    exported: tuple[list[str], str, Path], data: st.DataObject
) -> None:
    lines, head, path = exported
    edited = list(lines)
    i = data.draw(st.integers(0, len(lines) - 1), label="i")
    if data.draw(st.booleans(), label="delete"):
        del edited[i]
    else:
        j = data.draw(st.integers(0, len(lines) - 1).filter(lambda j: j != i), label="j")
        edited[i], edited[j] = edited[j], edited[i]
    result = verify_file(_write(path, [], edited))
    # Cutting the last event leaves a valid but shorter chain; only the head tells.
    assert not result.ok or (len(edited) < len(lines) and i == len(lines) - 1 and result.head_hash != head)
