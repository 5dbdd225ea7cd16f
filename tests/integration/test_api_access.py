"""Who may call what, against a live API: DESIGN.md's role table for every operation in the
OpenAPI, authentication failures, and tenant isolation.

One service serves the whole module (tenants "acme" and "globex"); requests that change
something act on objects made for that request, so the order of the tests does not matter.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd
import pytest
from sqlalchemy import func, select

from service.core import ledger
from service.core.audit import AuditEvent
from service.core.db import transaction
from service.core.orm import ApiKey, Dataset, Job, JobState, Release, new_id
from service.core.storage import Storage
from tests.integration.helpers import csv_bytes, dataset_with_budget, upload
from tests.integration.live import LiveService, live_service, service_settings

CUSTODIAN, ANALYST, AUDITOR, ADMIN = ROLES = ("custodian", "analyst", "auditor", "admin")
RELEASE_TABLE = pd.DataFrame(
    {"age": [30, 41, 52, 63, 74], "region": ["north", "south", "east", "west", "north"]}
)


def key_id(token: str) -> str:
    """The id part of a ``dps_<id>_<secret>`` token."""
    return token.split("_")[1]


def make_release(service: LiveService, client: httpx.Client, dataset_id: str, *, epsilon: float = 0.1) -> str:
    """Submit a job, then finish it as a worker would: settle it and write a release and its table."""
    response = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": epsilon, "rows": 5})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    release_id = new_id()
    storage_key = f"releases/{release_id}/table.parquet"
    buffer = io.BytesIO()
    RELEASE_TABLE.to_parquet(buffer, index=False)
    storage = Storage(service.settings.storage)
    with storage.open_write(storage_key) as fh:
        fh.write(buffer.getvalue())
    with storage.open_write(f"models/{job_id}/model.safetensors") as fh:
        fh.write(b"weights")  # streamed as they are
    with transaction(service.sessions) as session:
        job = session.get(Job, job_id)
        dataset = session.get(Dataset, dataset_id)
        assert job is not None and dataset is not None
        ledger.settle(job, state=JobState.succeeded, epsilon=epsilon, delta=job.delta)
        job.model_key = f"models/{job_id}/model.safetensors"
        certificate = {
            "epsilon": epsilon,
            "delta": job.delta,
            "accountant": {"name": "prv", "state_dict": {"history": [[1.1, 0.01, 100]]}},
            "mechanisms": [{"name": "dp-sgd", "epsilon": epsilon}],
            "row_count": {"public": False, "value": None, "why": "not released"},
            "input_sha256": dataset.sha256,  # as models.certificate writes it
            "service": {"job_id": job_id, "dataset_id": dataset_id, "release_id": release_id},
        }
        quality = {"fidelity": {"tvd_1way": 0.1}, "train_rows": 480, "holdout_rows": 120}
        session.add(
            Release(
                id=release_id,
                tenant_id=job.tenant_id,
                job_id=job_id,
                dataset_id=dataset_id,
                rows=len(RELEASE_TABLE),
                storage_key=storage_key,
                certificate=certificate,
                quality=quality,
            )
        )
    return release_id


@dataclass
class World:
    """A live service with one of everything in tenant acme, and the same in tenant globex."""

    service: LiveService
    tokens: dict[str, str]
    ids: dict[str, str]
    other: dict[str, str]
    other_custodian: str
    clients: dict[str | None, httpx.Client] = field(default_factory=dict)

    def client(self, token: str | None) -> AbstractContextManager[httpx.Client]:
        """A client for ``token``, kept open for the module (``with`` does not close it)."""
        if token not in self.clients:
            self.clients[token] = self.service.client(token)
        return nullcontext(self.clients[token])

    def fresh_dataset(self) -> str:
        with self.client(self.tokens[CUSTODIAN]) as client:
            response = upload(client, csv_bytes(50), name="fresh")
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def fresh_job(self) -> str:
        with self.client(self.tokens[CUSTODIAN]) as client:
            response = client.post(
                "/jobs", json={"dataset_id": self.ids["dataset_id"], "epsilon": 0.01, "rows": 5}
            )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def succeeded_job(self) -> str:
        """The job behind the fixture's release (succeeded, with a model to sample from)."""
        with self.service.sessions() as session:
            release = session.get(Release, self.ids["release_id"])
            assert release is not None
            return release.job_id

    def fresh_key(self) -> str:
        return key_id(self.service.key(ANALYST))

    def audit_count(self) -> int:
        with self.service.sessions() as session:
            return session.scalar(select(func.count()).select_from(AuditEvent)) or 0

    def auth_failures(self) -> tuple[int, dict[str, Any] | None]:
        """How many ``auth.failure`` events there are, and the last one."""
        failures = select(AuditEvent).where(AuditEvent.action == "auth.failure")
        with self.service.sessions() as session:
            count = session.scalar(select(func.count()).select_from(failures.subquery())) or 0
            last = session.scalars(failures.order_by(AuditEvent.seq.desc()).limit(1)).first()
            if last is None:
                return count, None
            return count, {"actor": last.actor, "tenant_id": last.tenant_id, **json.loads(last.details)}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with live_service(service_settings(tmp_path_factory.mktemp("access") / "data")) as service:
        tokens = {role: service.key(role) for role in ROLES}
        with service.client(tokens[CUSTODIAN]) as client:
            dataset_id = dataset_with_budget(client, epsilon=100.0, delta=0.1)
            release_id = make_release(service, client, dataset_id)
            job_id = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": 0.01, "rows": 5}).json()[
                "id"
            ]
            batch_id = client.post(
                "/batches", json={"jobs": [{"dataset_id": dataset_id, "epsilon": 0.01, "rows": 5}]}
            ).json()["id"]
        other_custodian = service.key(CUSTODIAN, tenant="globex")
        with service.client(other_custodian) as client:
            other_dataset = dataset_with_budget(client, epsilon=100.0, delta=0.1)
            other_release = make_release(service, client, other_dataset)
            other_job = client.post(
                "/jobs", json={"dataset_id": other_dataset, "epsilon": 0.01, "rows": 5}
            ).json()["id"]
            other_batch = client.post(
                "/batches", json={"jobs": [{"dataset_id": other_dataset, "epsilon": 0.01, "rows": 5}]}
            ).json()["id"]
        other_key = key_id(service.key(ANALYST, tenant="globex"))
        world = World(
            service=service,
            tokens=tokens,
            ids={
                "dataset_id": dataset_id,
                "job_id": job_id,
                "release_id": release_id,
                "key_id": key_id(tokens[ANALYST]),
                "batch_id": batch_id,
            },
            other={
                "dataset_id": other_dataset,
                "job_id": other_job,
                "release_id": other_release,
                "key_id": other_key,
                "batch_id": other_batch,
            },
            other_custodian=other_custodian,
        )
        yield world
        for client in world.clients.values():
            client.close()


@dataclass(frozen=True)
class Entry:
    """Who may call an operation (role -> success status; every other role gets 403) and how."""

    allowed: dict[str, int]
    build: Callable[[World], dict[str, Any]] = lambda world: {}
    # Path ids of objects made for each request (for calls that change what they act on).
    fresh: dict[str, Callable[[World], str]] = field(default_factory=dict)


def _with(**kwargs: Any) -> Callable[[World], dict[str, Any]]:
    return lambda world: {key: value(world) if callable(value) else value for key, value in kwargs.items()}


READERS = {CUSTODIAN: 200, ANALYST: 200, AUDITOR: 200}
PUBLIC = {role: 200 for role in ROLES}

# DESIGN.md, "Who uses it": custodians work on their datasets, jobs and releases; analysts only
# read releases; auditors read evidence (datasets' public view, ledgers, certificates, the
# audit log) but never data; admins manage keys and nothing else.
MATRIX: dict[tuple[str, str], Entry] = {
    ("GET", "/health"): Entry(PUBLIC),
    ("POST", "/datasets"): Entry(
        {CUSTODIAN: 201}, _with(params={"name": "m", "format": "csv"}, content=csv_bytes(50))
    ),
    ("GET", "/datasets"): Entry({CUSTODIAN: 200, AUDITOR: 200}),
    ("GET", "/datasets/{dataset_id}"): Entry({CUSTODIAN: 200, AUDITOR: 200}),
    ("GET", "/datasets/{dataset_id}/schema"): Entry({CUSTODIAN: 200}),
    ("PUT", "/datasets/{dataset_id}/schema"): Entry(
        {CUSTODIAN: 200}, _with(json={"columns": {"age": {"kind": "integer", "bounds": [0, 120]}}})
    ),
    ("PUT", "/datasets/{dataset_id}/budget"): Entry(
        {CUSTODIAN: 200}, _with(json={"epsilon": 100.0, "delta": 0.1})
    ),
    ("GET", "/datasets/{dataset_id}/ledger"): Entry({CUSTODIAN: 200, AUDITOR: 200}),
    ("GET", "/datasets/{dataset_id}/statement"): Entry({CUSTODIAN: 200, AUDITOR: 200}),
    ("DELETE", "/datasets/{dataset_id}/raw"): Entry(
        {CUSTODIAN: 200}, fresh={"dataset_id": World.fresh_dataset}
    ),
    ("PUT", "/datasets/{dataset_id}/retention"): Entry(
        {CUSTODIAN: 200}, _with(json={"days": 3650}), fresh={"dataset_id": World.fresh_dataset}
    ),
    ("POST", "/jobs"): Entry(
        {CUSTODIAN: 201},
        _with(json=lambda w: {"dataset_id": w.ids["dataset_id"], "epsilon": 0.01, "rows": 5}),
    ),
    ("GET", "/jobs"): Entry({CUSTODIAN: 200}),
    ("POST", "/batches"): Entry(
        {CUSTODIAN: 201},
        _with(json=lambda w: {"jobs": [{"dataset_id": w.ids["dataset_id"], "epsilon": 0.01, "rows": 5}] * 2}),
    ),
    ("GET", "/batches/{batch_id}"): Entry({CUSTODIAN: 200}),
    ("GET", "/jobs/{job_id}"): Entry({CUSTODIAN: 200}),
    ("POST", "/jobs/{job_id}/cancel"): Entry({CUSTODIAN: 200}, fresh={"job_id": World.fresh_job}),
    ("POST", "/jobs/{job_id}/releases"): Entry(
        {CUSTODIAN: 202}, _with(json={"rows": 7}), fresh={"job_id": World.succeeded_job}
    ),
    ("GET", "/releases"): Entry(READERS),
    ("GET", "/releases/{release_id}"): Entry(READERS),
    ("GET", "/releases/{release_id}/certificate"): Entry(READERS),
    ("GET", "/releases/{release_id}/quality"): Entry({CUSTODIAN: 200}),
    ("GET", "/releases/{release_id}/download"): Entry({CUSTODIAN: 200, ANALYST: 200}),
    ("GET", "/releases/{release_id}/model"): Entry({CUSTODIAN: 200, ANALYST: 200}),
    ("GET", "/audit/export"): Entry({AUDITOR: 200}),
    ("GET", "/audit/bundles"): Entry(
        {AUDITOR: 200}, _with(params=lambda w: {"dataset_id": w.ids["dataset_id"]})
    ),
    ("GET", "/audit/public-key"): Entry(PUBLIC),
    ("GET", "/keys"): Entry({ADMIN: 200}),
    ("POST", "/keys"): Entry({ADMIN: 201}, _with(json={"role": ANALYST, "name": "new"})),
    ("DELETE", "/keys/{key_id}"): Entry({ADMIN: 200}, fresh={"key_id": World.fresh_key}),
}
OPERATIONS = sorted(MATRIX)
GUARDED = [op for op in OPERATIONS if MATRIX[op].allowed is not PUBLIC]
OBJECT_OPERATIONS = [op for op in OPERATIONS if "{" in op[1]]


@dataclass(frozen=True)
class Call:
    """One prepared request (the objects it acts on already exist)."""

    method: str
    path: str
    kwargs: dict[str, Any]

    def send(self, world: World, token: str | None) -> httpx.Response:
        with world.client(token) as client:
            return client.request(self.method, self.path, **self.kwargs)


def prepare(
    world: World, op: tuple[str, str], ids: dict[str, str] | None = None, *, fresh: bool = True
) -> Call:
    """``op`` with its matrix request; ``ids`` overrides the path's object ids.

    ``fresh=False`` leaves out the objects made for a request that would change them, for
    requests that are refused before they get that far.
    """
    method, template = op
    entry = MATRIX[op]
    made = {name: make(world) for name, make in entry.fresh.items()} if fresh else {}
    path = template.format(**(world.ids | made | (ids or {})))
    return Call(method, path, entry.build(world))


def test_the_matrix_covers_every_operation_in_the_openapi(world: World):
    with world.client(None) as client:
        paths = client.get("/openapi.json").json()["paths"]
    published = {(method.upper(), path) for path, item in paths.items() for method in item}
    assert published - set(MATRIX) == set(), "operations without a matrix entry: decide who may call them"
    assert set(MATRIX) - published == set(), "matrix entries for operations that no longer exist"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("op", OPERATIONS, ids=" ".join)
def test_role_matrix(world: World, op: tuple[str, str], role: str):
    expected = MATRIX[op].allowed.get(role, 403)
    call = prepare(world, op)
    before = world.audit_count()
    response = call.send(world, world.tokens[role])
    assert response.status_code == expected, response.text
    if expected == 403:
        assert response.json()["detail"], "a refusal says why"
        assert world.audit_count() == before, "a refused request must change nothing"


def test_health_needs_no_key(world: World):
    with world.client(None) as client:
        assert client.get("/health").json() == {"status": "ok"}


def _bad_credentials(world: World) -> dict[str, dict[str, str]]:
    custodian = world.tokens[CUSTODIAN]
    revoked = world.service.key(CUSTODIAN)
    with world.client(world.tokens[ADMIN]) as client:
        assert client.delete(f"/keys/{key_id(revoked)}").status_code == 200
    unknown = f"dps_{'0' * 16}_{custodian.split('_', 2)[2]}"
    wrong_secret = custodian[:-4] + ("AAAA" if not custodian.endswith("AAAA") else "BBBB")
    return {
        "no key": {},
        "malformed key": {"X-API-Key": "not-a-key"},
        "unknown key id": {"X-API-Key": unknown},
        "wrong secret": {"X-API-Key": wrong_secret},
        "revoked key": {"X-API-Key": revoked},
        "bad bearer token": {"Authorization": "Bearer dps_nothing"},
    }


def test_bad_credentials_are_401_and_audited_on_every_operation(world: World):
    for label, headers in _bad_credentials(world).items():
        with httpx.Client(base_url=world.service.url, headers=headers, timeout=60) as client:
            for op in GUARDED:
                call = prepare(world, op, fresh=False)
                before, _ = world.auth_failures()
                response = client.request(call.method, call.path, **call.kwargs)
                assert response.status_code == 401, (label, op, response.text)
                assert response.json() == {"detail": "invalid or revoked API key"}, (label, op)
                assert response.headers["WWW-Authenticate"] == "Bearer"
                count, last = world.auth_failures()
                assert count == before + 1, (label, op)
                assert last == {
                    "actor": "anonymous",
                    "tenant_id": None,
                    "path": call.path,
                    "method": call.method,
                    "had_key": bool(headers),
                }


def test_bearer_token_is_accepted_like_the_header(world: World):
    headers = {"Authorization": f"Bearer {world.tokens[ANALYST]}"}
    with httpx.Client(base_url=world.service.url, headers=headers, timeout=60) as client:
        assert client.get("/releases").status_code == 200


def test_a_revoked_key_stops_working_at_once(world: World):
    token = world.service.key(ANALYST)
    with world.client(token) as client:
        assert client.get("/releases").status_code == 200
    with world.client(world.tokens[ADMIN]) as admin:
        revoked = admin.delete(f"/keys/{key_id(token)}")
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
    with world.client(token) as client:
        assert client.get("/releases").status_code == 401


def _without_id(response: httpx.Response, object_id: str) -> tuple[int, str]:
    return response.status_code, response.json()["detail"].replace(object_id, "<id>")


@pytest.mark.parametrize("op", OBJECT_OPERATIONS, ids=" ".join)
def test_another_tenants_object_is_indistinguishable_from_a_missing_one(world: World, op: tuple[str, str]):
    name = op[1].split("{")[1].split("}")[0]
    for role in MATRIX[op].allowed:
        missing_id = new_id()[: len(world.other[name])]
        on_theirs, on_missing = (
            prepare(world, op, {name: world.other[name]}),
            prepare(world, op, {name: missing_id}),
        )
        before = world.audit_count()
        theirs, missing = (
            on_theirs.send(world, world.tokens[role]),
            on_missing.send(world, world.tokens[role]),
        )
        assert theirs.status_code == 404, (role, theirs.text)
        assert _without_id(theirs, world.other[name]) == _without_id(missing, missing_id), role
        assert world.audit_count() == before, "a request for another tenant's object must change nothing"


def test_another_tenants_objects_are_untouched_by_refused_writes(world: World):
    with world.client(world.other_custodian) as client:
        dataset = client.get(f"/datasets/{world.other['dataset_id']}").json()
        job = client.get(f"/jobs/{world.other['job_id']}").json()
    assert dataset["raw_deleted_at"] is None
    assert job["state"] == "queued"
    with world.service.sessions() as session:
        key = session.get(ApiKey, world.other["key_id"])
        assert key is not None and key.revoked_at is None


def test_jobs_cannot_be_submitted_on_another_tenants_dataset(world: World):
    with world.client(world.tokens[CUSTODIAN]) as client:
        theirs = client.post(
            "/jobs", json={"dataset_id": world.other["dataset_id"], "epsilon": 0.1, "rows": 5}
        )
    assert theirs.status_code == 404
    assert theirs.json()["detail"] == f"no dataset {world.other['dataset_id']!r}"


def test_lists_and_the_audit_export_hold_only_the_callers_tenant(world: World):
    other_ids = set(world.other.values())
    seen: list[Any] = []
    with world.client(world.tokens[CUSTODIAN]) as client:
        for path in ("/datasets", "/jobs", "/releases"):
            seen += client.get(path).json()
        assert client.get("/jobs", params={"dataset_id": world.other["dataset_id"]}).json() == []
    with world.client(world.tokens[ADMIN]) as client:
        seen += client.get("/keys").json()
    assert seen and not other_ids & {
        value for item in seen for value in item.values() if isinstance(value, str)
    }
    with world.client(world.tokens[AUDITOR]) as client:
        export = client.get("/audit/export")
    events = [json.loads(line) for line in export.text.splitlines()]
    acme = world.service.tenant("acme")
    assert events and {event["tenant_id"] for event in events} == {acme}
    assert not other_ids & {event["object_id"] for event in events}


def test_custodian_sees_raw_facts_and_the_auditor_only_the_public_view(world: World):
    path = f"/datasets/{world.ids['dataset_id']}"
    with world.client(world.tokens[CUSTODIAN]) as client:
        mine = client.get(path).json()
        listed = client.get("/datasets").json()
    with world.client(world.tokens[AUDITOR]) as client:
        public = client.get(path).json()
        audited_list = client.get("/datasets").json()
    assert mine["row_count"] == 600 and len(mine["sha256"]) == 64 and "age" in mine["schema"]["columns"]
    raw_facts = {"row_count", "sha256", "size_bytes", "schema", "inferred_schema", "budget"}
    assert raw_facts <= set(mine)
    assert not raw_facts & set(public)
    assert public == {key: mine[key] for key in public}
    for item in listed + audited_list:
        assert not raw_facts & set(item)


def _facts_in(value: Any, path: str = "") -> list[str]:
    """Where ``value`` carries a fact about raw data: a hash, a size or a row count."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in {
                "sha256",
                "input_sha256",
                "size_bytes",
                "train_rows",
                "holdout_rows",
                "inferred_schema",
            }:
                found.append(f"{path}.{key}")
            elif key == "row_count" and item not in (
                None,
                {"public": False, "value": None, "why": "not released"},
            ):
                found.append(f"{path}.{key}")
            else:
                found += _facts_in(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _facts_in(item, f"{path}[{index}]")
    return found


def test_analysts_never_see_raw_facts(world: World):
    with world.client(world.tokens[CUSTODIAN]) as client:
        sha256 = client.get(f"/datasets/{world.ids['dataset_id']}").json()["sha256"]
    release = world.ids["release_id"]
    bodies = {}
    with world.client(world.tokens[ANALYST]) as client:
        for path in ("/releases", f"/releases/{release}", f"/releases/{release}/certificate"):
            response = client.get(path)
            assert response.status_code == 200
            bodies[path] = response
            assert _facts_in(response.json()) == [], path
        for fmt in ("csv", "parquet"):
            bodies[fmt] = client.get(f"/releases/{release}/download", params={"format": fmt})
    for name, response in bodies.items():
        assert sha256.encode() not in response.content, name


def test_certificates_carry_the_input_hash_for_the_custodian_only(world: World):
    path = f"/releases/{world.ids['release_id']}/certificate"
    certificates = {}
    for role in (CUSTODIAN, ANALYST, AUDITOR):
        with world.client(world.tokens[role]) as client:
            certificates[role] = client.get(path).json()
    assert len(certificates[CUSTODIAN]["input_sha256"]) == 64
    for role in (ANALYST, AUDITOR):
        assert "input_sha256" not in certificates[role]
        assert certificates[role] == {k: v for k, v in certificates[CUSTODIAN].items() if k != "input_sha256"}


def test_quality_report_is_marked_custodian_only(world: World):
    with world.client(world.tokens[CUSTODIAN]) as client:
        report = client.get(f"/releases/{world.ids['release_id']}/quality").json()
    assert report["custodian_only"] is True
    assert report["report"]["train_rows"] == 480


def test_analyst_downloads_the_release_as_csv_and_parquet_and_it_is_audited(world: World):
    release = world.ids["release_id"]
    with world.client(world.tokens[ANALYST]) as client:
        as_csv = client.get(f"/releases/{release}/download")
        as_parquet = client.get(f"/releases/{release}/download", params={"format": "parquet"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.headers["content-disposition"] == f'attachment; filename="release-{release}.csv"'
    pd.testing.assert_frame_equal(pd.read_csv(io.BytesIO(as_csv.content)), RELEASE_TABLE)
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(as_parquet.content)), RELEASE_TABLE)
    with world.service.sessions() as session:
        downloads = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "release.download", AuditEvent.object_id == release)
        ).all()
    assert f"key:{key_id(world.tokens[ANALYST])}" in {event.actor for event in downloads}


def test_ids_that_cannot_exist_are_404_on_any_database(service_any_db: LiveService):
    token = service_any_db.key(CUSTODIAN)
    with service_any_db.client(token) as client:
        for path in ("/datasets/%00", "/datasets/x%00y/ledger", "/jobs/%E2%98%83", "/releases/..%5c..%5cetc"):
            response = client.get(path)
            assert response.status_code == 404, (path, response.text)
            assert response.json()["detail"].startswith("no ")
        assert client.get("/jobs", params={"dataset_id": "\x00"}).json() == []
        refused = client.post("/jobs", json={"dataset_id": "a\x00b", "epsilon": 0.1, "rows": 5})
        assert refused.status_code == 404
        named = upload(client, csv_bytes(50), name="a\x00b")
        assert named.status_code == 422
        assert named.json()["detail"][0]["loc"] == ["query", "name"]
    with service_any_db.client(service_any_db.key(ADMIN)) as client:
        key = client.post("/keys", json={"role": ANALYST, "name": "tab\there"})
        assert key.status_code == 422
        assert key.json()["detail"][0]["loc"] == ["body", "name"]
