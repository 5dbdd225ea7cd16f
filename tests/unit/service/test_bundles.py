"""Bundles written from a database made with the core functions, and the verifier's corner cases.

Tampering with a bundle from a live service is tested in tests/integration/test_audit_bundles.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.cli import main
from service.core import audit
from service.core.bundle_verify import verify_bundle
from service.core.bundles import Scope, audit_time, snapshot, write_bundle
from service.core.db import Base, make_engine, make_sessionmaker, transaction
from service.core.errors import InvalidRequestError
from service.core.orm import Dataset, Job, JobState, Release, Tenant
from service.core.signing import Signer

SIGNER = Signer.from_seed(os.urandom(32))


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    Base.metadata.create_all(engine)
    factory = make_sessionmaker(engine)
    with transaction(factory) as session:
        session.add_all([Tenant(id="t1", name="acme"), Tenant(id="t2", name="globex")])
        session.flush()
        for tenant, dataset in (("t1", "d1"), ("t2", "d2")):
            session.add(
                Dataset(
                    id=dataset,
                    tenant_id=tenant,
                    name=dataset,
                    file_format="csv",
                    size_bytes=1,
                    row_count=1000,
                    sha256="0" * 64,
                    inferred_schema={},
                    schema={},
                    epsilon_budget=2.0,
                    delta_budget=1e-4,
                )
            )
            audit.append(
                session,
                action="dataset.upload",
                actor="key:k",
                tenant_id=tenant,
                object_id=dataset,
                object_type="dataset",
            )
        session.flush()
        session.add(
            Job(
                id="j1",
                tenant_id="t1",
                dataset_id="d1",
                created_by="k",
                state=JobState.succeeded,
                epsilon=1.0,
                delta=1e-5,
                rows=5,
                epsilon_charged=0.75,
                delta_charged=1e-5,
            )
        )
        session.flush()
        certificate = {
            "epsilon": 0.75,
            "delta": 1e-5,
            "input_sha256": "ab" * 32,
            "service": {"job_id": "j1", "dataset_id": "d1", "release_id": "r1"},
        }
        session.add(
            Release(
                id="r1",
                tenant_id="t1",
                job_id="j1",
                dataset_id="d1",
                rows=5,
                storage_key="k",
                certificate=certificate,
            )
        )
        audit.append(
            session,
            action="job.succeeded",
            actor="worker:w",
            tenant_id="t1",
            object_type="job",
            object_id="j1",
            details={"dataset_id": "d1", "epsilon_charged": 0.75},
        )
    yield factory
    engine.dispose()


def _bundle(sessions: sessionmaker[Session], path: Path, **scope: object) -> Path:
    with transaction(sessions) as session, path.open("wb") as out:
        snapshot(session)
        write_bundle(session, out, scope=Scope(tenant_id="t1", **scope), signer=SIGNER, actor="key:a")  # type: ignore[arg-type]
    return path


def _rewrite(path: Path, **files: bytes | None) -> Path:
    """The bundle with some members replaced (None: removed), not re-signed."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members.update(files)
    out = path.with_name("changed.zip")
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            if data is not None:
                archive.writestr(name, data)
    return out


def test_a_bundle_verifies_and_holds_one_tenant_only(sessions, tmp_path: Path):
    path = _bundle(sessions, tmp_path / "b.zip")
    result = verify_bundle(path, trusted_key=SIGNER.public_pem())
    assert result.ok, result.problems
    assert result.events == 2 and result.trusted_key == SIGNER.fingerprint
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == [
            "certificates/r1.json",
            "events.jsonl",
            "ledger.json",
            "manifest.json",
            "manifest.sig",
            "public_key.pem",
        ]
        ledger = json.loads(archive.read("ledger.json"))
        certificate = json.loads(archive.read("certificates/r1.json"))
    assert [d["dataset_id"] for d in ledger["datasets"]] == ["d1"]
    assert ledger["datasets"][0]["budget"]["epsilon_charged"] == 0.75
    assert "input_sha256" not in certificate


def test_a_dataset_bundle_marks_its_events(sessions, tmp_path: Path):
    path = _bundle(sessions, tmp_path / "b.zip", dataset_id="d1")
    result = verify_bundle(path)
    assert result.ok, result.problems
    assert result.manifest is not None and result.manifest.events.dataset_event_seqs == [1, 2]
    with pytest.raises(InvalidRequestError, match="no dataset 'd2' in this tenant"):
        _bundle(sessions, tmp_path / "c.zip", dataset_id="d2")


def test_an_empty_time_range_is_a_valid_bundle(sessions, tmp_path: Path):
    later = datetime.now(UTC) + timedelta(days=1)
    result = verify_bundle(_bundle(sessions, tmp_path / "b.zip", since=later))
    assert result.ok and result.events == 0
    result = verify_bundle(_bundle(sessions, tmp_path / "c.zip", until=datetime(2000, 1, 1, tzinfo=UTC)))
    assert result.ok and result.events == 0


def test_scope_times_are_utc_and_ordered():
    assert audit_time(datetime(2025, 1, 2, 3, 4, 5)) == "2025-01-02T03:04:05.000000Z"
    assert (
        audit_time(datetime(2025, 1, 2, 3, tzinfo=timezone(timedelta(hours=2))))
        == "2025-01-02T01:00:00.000000Z"
    )
    with pytest.raises(InvalidRequestError, match="cannot be expressed in UTC"):
        audit_time(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))))
    with pytest.raises(InvalidRequestError, match="is after until"):
        Scope(tenant_id="t", since=datetime(2025, 2, 1), until=datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"manifest.json": b"{not json"}, "manifest.json is not a bundle manifest: not JSON"),
        (
            {"manifest.json": b'{"format": 1}'},
            "manifest.json is not a bundle manifest: format: Input should be",
        ),
        ({"public_key.pem": b"junk"}, "public_key.pem is unusable: not a PEM public key"),
        ({"public_key.pem": None}, "public_key.pem is missing"),
        ({"events.jsonl": b"[1]\n"}, "events.jsonl line 1: is not a JSON object"),
        (
            {"ledger.json": b'{"datasets": [{"dataset_id": 5}]}'},
            "ledger.json is not a bundle ledger: datasets.0",
        ),
        ({"certificates/r1.json": b"[]"}, "certificates/r1.json is not a certificate"),
        ({"certificates/r1.json": b"{"}, "certificates/r1.json is not JSON"),
        ({"certificates/x/../r1.json": b"{}"}, "is not where a certificate goes"),
    ],
)
def test_malformed_parts_are_named(sessions, tmp_path: Path, files: dict[str, bytes | None], expected: str):
    result = verify_bundle(_rewrite(_bundle(sessions, tmp_path / "b.zip"), **files))
    assert not result.ok
    assert any(expected in problem for problem in result.problems), result.problems


def test_a_damaged_archive_is_reported_not_raised(sessions, tmp_path: Path):
    path = _bundle(sessions, tmp_path / "b.zip")
    data = bytearray(path.read_bytes())
    offset = data.index(b"ledger.json") + 40  # inside the compressed ledger: its CRC no longer matches
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    result = verify_bundle(path)
    assert not result.ok and any("the archive is damaged" in p or "ledger.json" in p for p in result.problems)


def test_the_trusted_key_must_be_an_ed25519_pem(sessions, tmp_path: Path, capsys):
    path = _bundle(sessions, tmp_path / "b.zip")
    with pytest.raises(ValueError, match="not a PEM public key"):
        verify_bundle(path, trusted_key=b"nope")
    key = tmp_path / "key.pem"
    key.write_bytes(b"nope")
    assert main(["audit", "verify", str(path), "--public-key", str(key)]) == 2
    assert "dpsynth: error: not a PEM public key" in capsys.readouterr().err


def test_cli_reports_a_non_zip_named_zip(tmp_path: Path, capsys):
    path = tmp_path / "bundle.zip"
    path.write_bytes(b"hello")
    assert main(["audit", "verify", str(path)]) == 1
    assert "bundle.zip is not a zip archive" in capsys.readouterr().out


def test_bundles_are_read_from_any_file_name(sessions, tmp_path: Path):
    path = _bundle(sessions, tmp_path / "b.zip").rename(tmp_path / "evidence.bin")
    assert main(["audit", "verify", str(path)]) == 0
    assert zipfile.is_zipfile(io.BytesIO(path.read_bytes()))


def test_the_verifier_uses_the_ledgers_slack_and_loads_no_engine():
    from service.core import bundle_format, ledger

    assert bundle_format.SLACK == ledger.SLACK
    code = (
        "import sys, service.core.bundle_verify; "
        "print(any(m.split('.')[0] in ('torch', 'models') for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_clocks_that_disagree_inside_the_range_are_no_tampering(sessions, tmp_path: Path, monkeypatch):
    """Several API processes append with their own clocks: ``at`` may step back inside a slice."""
    base = datetime(2030, 1, 1, tzinfo=UTC)
    times = iter(
        [base, base + timedelta(seconds=2), base + timedelta(seconds=1), base + timedelta(seconds=3)]
    )

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return next(times)

    monkeypatch.setattr(audit, "datetime", Clock)
    with transaction(sessions) as session:
        for _ in range(4):
            audit.append(session, action="auth.login", actor="user:u", tenant_id="t1")
    monkeypatch.undo()
    # From the first event at or after since to the last: the third, a second earlier, is inside.
    path = _bundle(sessions, tmp_path / "b.zip", since=base + timedelta(seconds=1.5))
    result = verify_bundle(path)
    assert result.ok, result.problems
    assert result.events == 3
