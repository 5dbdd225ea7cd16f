"""Evidence bundles against a live API: exported by auditors (API, CLI, web form), verified
offline, and caught however they are tampered with.

One service serves the module. Tenant acme has two datasets with succeeded (two releases
from one job), failed, cancelled and queued jobs, finished through the same core functions a
worker calls (so their audit events are real); tenant globex has its own, which must never show.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.cli import main
from service.core import jobs
from service.core.bundle_verify import BundleResult, verify_bundle
from service.core.db import transaction
from service.core.orm import Job, JobState, Release, Role, new_id
from service.core.security import create_user
from tests.integration.bundle_tools import Bundle
from tests.integration.helpers import dataset_with_budget
from tests.integration.live import LiveService, live_service, service_settings

WORKER = "bundle-test-worker"
PASSWORD = "correct horse battery"


def submit(client: httpx.Client, dataset_id: str, epsilon: float) -> str:
    response = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": epsilon, "rows": 5})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def run(service: LiveService, job_id: str) -> None:
    """Claim the job as a worker does (a ``job.running`` event)."""
    with transaction(service.sessions) as session:
        assert jobs.claim(session, job_id, owner=WORKER, lease_seconds=600) is not None


def succeed(service: LiveService, job_id: str, *, epsilon: float) -> str:
    """Finish the job as a worker does: charge it, and store its first release and certificate."""
    run(service, job_id)
    release_id = new_id()
    with transaction(service.sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        certificate = {
            "epsilon": epsilon,
            "delta": job.delta,
            "accountant": {"name": "prv", "state_dict": {"history": [[1.1, 0.01, 100]]}},
            "mechanisms": [{"name": "marginals", "epsilon": epsilon}],
            "input_sha256": "ab" * 32,
            "service": {
                "job_id": job_id,
                "dataset_id": job.dataset_id,
                "release_id": release_id,
                "sample_seed": 7,
            },
        }
        release = Release(
            id=release_id,
            tenant_id=job.tenant_id,
            job_id=job_id,
            dataset_id=job.dataset_id,
            rows=5,
            storage_key=f"releases/{release_id}/table.parquet",
            certificate=certificate,
        )
        jobs.succeed(
            session, job_id, owner=WORKER, epsilon=epsilon, model_key=f"models/{job_id}.pt", release=release
        )
    return release_id


@dataclass
class Evidence:
    service: LiveService
    tokens: dict[str, str]
    ids: dict[str, str]
    bundle: bytes  # the whole tenant's
    pem: bytes  # the service's public key, as published

    def client(self, role: str | None = "auditor") -> httpx.Client:
        return self.service.client(self.tokens[role] if role else None)

    def download(self, **params: str) -> httpx.Response:
        with self.client() as client:
            return client.get("/audit/bundles", params=params)


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Evidence]:
    with live_service(service_settings(tmp_path_factory.mktemp("bundles") / "data")) as service:
        tokens = {role: service.key(role) for role in ("custodian", "analyst", "auditor")}
        ids: dict[str, str] = {}
        with service.client(tokens["custodian"]) as client:
            a = ids["dataset_a"] = dataset_with_budget(client, epsilon=5.0)
            ids["job_a1"] = submit(client, a, 1.0)
            ids["release_a1"] = succeed(service, ids["job_a1"], epsilon=1.0)
            more = client.post(f"/jobs/{ids['job_a1']}/releases", json={"rows": 7})  # no budget, same job
            assert more.status_code == 202, more.text
            ids["release_a1b"] = more.json()["id"]
            ids["job_a2"] = submit(client, a, 0.5)
            ids["release_a2"] = succeed(service, ids["job_a2"], epsilon=0.4)  # spent less than reserved
            ids["job_a3"] = submit(client, a, 0.3)
            run(service, ids["job_a3"])
            with transaction(service.sessions) as session:
                jobs.stop(
                    session, ids["job_a3"], owner=WORKER, state=JobState.failed, epsilon=0.1, error="boom"
                )
            ids["job_a4"] = submit(client, a, 0.2)
            assert client.post(f"/jobs/{ids['job_a4']}/cancel").json()["state"] == "cancelled"
            ids["job_a5"] = submit(client, a, 0.25)  # still queued: a reservation
            b = ids["dataset_b"] = dataset_with_budget(client, epsilon=2.0)
            ids["job_b1"] = submit(client, b, 0.5)
            ids["release_b1"] = succeed(service, ids["job_b1"], epsilon=0.5)
        with service.client(service.key("custodian", tenant="globex")) as client:
            ids["globex_dataset"] = dataset_with_budget(client, epsilon=1.0)
            ids["globex_release"] = succeed(service, submit(client, ids["globex_dataset"], 0.5), epsilon=0.5)
        with service.client() as client:
            published = client.get("/audit/public-key").json()
        evidence = Evidence(service, tokens, ids, b"", published["public_key_pem"].encode())
        response = evidence.download()
        assert response.status_code == 200, response.text
        evidence.bundle = response.content
        yield evidence


def check(tmp_path: Path, data: bytes, *, trusted: bytes | None) -> BundleResult:
    path = tmp_path / "bundle.zip"
    path.write_bytes(data)
    return verify_bundle(path, trusted_key=trusted)


def test_the_untampered_bundle_verifies_against_the_published_key(evidence: Evidence, tmp_path: Path):
    result = check(tmp_path, evidence.bundle, trusted=evidence.pem)
    assert result.ok, result.problems
    assert result.trusted_key == result.bundle_key
    bundle = Bundle(evidence.bundle)
    ids, manifest = evidence.ids, bundle.manifest
    assert manifest["counts"] == {
        "events": result.events,
        "datasets": 2,
        "jobs": 6,
        "releases": 4,
        "certificates": 4,
    }
    assert manifest["scope"] == {
        "tenant_id": evidence.service.tenant("acme"), "dataset_id": None, "since": None, "until": None,
    }  # fmt: skip
    events = bundle.events()
    assert {event["tenant_id"] for event in events} == {evidence.service.tenant("acme")}
    assert [event["tenant_seq"] for event in events] == list(range(1, len(events) + 1))
    assert events[-1]["action"] == "audit.bundle"  # the export is recorded, and in the bundle
    assert manifest["chain"]["head"] == {"seq": len(events), "hash": events[-1]["tenant_hash"]}
    assert not {ids["globex_dataset"], ids["globex_release"]} & {e["object_id"] for e in events}
    lines = {line["job_id"]: line for d in bundle.json("ledger.json")["datasets"] for line in d["lines"]}
    assert {job: lines[ids[job]]["state"] for job in ("job_a1", "job_a3", "job_a4", "job_a5")} == {
        "job_a1": "succeeded", "job_a3": "failed", "job_a4": "cancelled", "job_a5": "queued",
    }  # fmt: skip
    assert lines[ids["job_a1"]]["release_ids"] == [ids["release_a1"], ids["release_a1b"]]
    certificate = bundle.json(f"certificates/{ids['release_a1b']}.json")
    assert certificate["service"]["release_id"] == ids["release_a1b"] and certificate["epsilon"] == 1.0
    for name in bundle.certificate_names():
        assert "input_sha256" not in bundle.json(name)  # custodian-only, as on GET /releases/{id}/certificate


def test_the_public_key_is_public_and_is_the_one_in_bundles(evidence: Evidence):
    with evidence.client(None) as client:
        published = client.get("/audit/public-key")
    assert published.status_code == 200
    body = published.json()
    assert body["algorithm"] == "Ed25519" and re.fullmatch(r"sha256:[0-9a-f]{64}", body["fingerprint"])
    bundle = Bundle(evidence.bundle)
    assert bundle.files["public_key.pem"] == body["public_key_pem"].encode()
    assert bundle.manifest["public_key"]["fingerprint"] == body["fingerprint"]


def test_a_dataset_bundle_keeps_the_whole_tenant_chain_and_marks_the_datasets_events(
    evidence: Evidence, tmp_path: Path
):
    ids = evidence.ids
    response = evidence.download(dataset_id=ids["dataset_a"])
    assert response.status_code == 200, response.text
    assert check(tmp_path, response.content, trusted=evidence.pem).ok
    bundle = Bundle(response.content)
    assert [d["dataset_id"] for d in bundle.json("ledger.json")["datasets"]] == [ids["dataset_a"]]
    assert bundle.certificate_names() == sorted(
        f"certificates/{ids[r]}.json" for r in ("release_a1", "release_a1b", "release_a2")
    )
    events = bundle.events()
    assert [e["tenant_seq"] for e in events] == list(range(1, len(events) + 1))  # nothing left out
    marked = set(bundle.manifest["events"]["dataset_event_seqs"])
    about_b = {
        e["tenant_seq"]
        for e in events
        if ids["dataset_b"] in (e["object_id"], e["details"].get("dataset_id"))
    }
    about_a = {
        e["tenant_seq"]
        for e in events
        if e["object_id"] in (ids["dataset_a"], ids["job_a1"], ids["release_a1b"])
    }
    assert about_b and not about_b & marked
    assert about_a <= marked
    # The marks are signed and recomputed: marking one more event is caught even when re-signed.
    bundle_copy = Bundle(response.content)
    manifest = bundle_copy.manifest
    manifest["events"]["dataset_event_seqs"] = sorted(marked | about_b)
    bundle_copy.put_json("manifest.json", manifest)
    bundle_copy.resign(Ed25519PrivateKey.generate())
    result = check(tmp_path, bundle_copy.to_bytes(), trusted=None)
    assert any("as concerning dataset" in p for p in result.problems), result.problems


def test_a_time_range_bundle_is_a_signed_stretch_of_the_chain(evidence: Evidence, tmp_path: Path):
    events = Bundle(evidence.bundle).events()
    since, until = events[3]["at"], events[8]["at"]
    response = evidence.download(since=since, until=until)
    assert response.status_code == 200, response.text
    assert check(tmp_path, response.content, trusted=evidence.pem).ok
    bundle = Bundle(response.content)
    inside = [e["tenant_seq"] for e in events if since <= e["at"] <= until]
    assert [e["tenant_seq"] for e in bundle.events()] == list(range(inside[0], inside[-1] + 1))
    assert bundle.manifest["events"]["first"]["tenant_seq"] == inside[0] > 1
    assert bundle.manifest["chain"]["head"]["seq"] > inside[-1]  # the head at export is signed too
    # Its end is signed: cutting the last event off is found although the chain before it is intact.
    bundle.put_lines(bundle.lines()[:-1])
    result = check(tmp_path, bundle.to_bytes(), trusted=evidence.pem)
    assert any("events were cut off the end" in p for p in result.problems), result.problems
    empty = evidence.download(since="2999-01-01T00:00:00Z")
    assert empty.status_code == 200
    assert check(tmp_path, empty.content, trusted=evidence.pem).ok
    assert Bundle(empty.content).events() == []


def test_who_may_export_and_what_scopes_are_refused(evidence: Evidence):
    before = len(Bundle(evidence.download().content).events())
    for role, status in (("custodian", 403), ("analyst", 403)):
        with evidence.client(role) as client:
            assert client.get("/audit/bundles").status_code == status
    for params, status, detail in (
        ({"dataset_id": evidence.ids["globex_dataset"]}, 404, "no dataset"),
        ({"dataset_id": "zz"}, 404, "no dataset"),
        ({"since": "2025-02-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"}, 422, "is after until"),
        ({"since": "0001-01-01T00:00:00+05:00"}, 422, "cannot be expressed in UTC"),
        ({"until": "yesterday"}, 422, ""),
    ):
        response = evidence.download(**params)
        assert response.status_code == status, (params, response.text)
        assert detail in json.dumps(response.json()["detail"])
    after = Bundle(evidence.download().content).events()
    assert len(after) == before + 1  # only the two good exports were recorded, nothing refused
    assert [e["action"] for e in after[-2:]] == ["audit.bundle", "audit.bundle"]


# -- tampering ----------------------------------------------------------------------------

OTHER_KEY = Ed25519PrivateKey.generate()
RESIGNED = "the bundle was re-signed with another key"


@dataclass(frozen=True)
class Tamper:
    """A tampering, the problem it must produce, and whether only the trusted key can catch it.

    ``self_consistent``: a forger rewrote and re-signed everything consistently, so without
    the trusted key the bundle verifies (which the CLI says plainly); with it, ``RESIGNED``.
    """

    change: Callable[[Bundle, dict[str, str]], None]
    expected: str
    self_consistent: bool = False


def _edit_event(bundle: Bundle, _ids: dict[str, str]) -> None:
    events = bundle.events()
    events[2]["actor"] = "key:someone-else"
    bundle.put_events(events)


def _swap(items: list[bytes], i: int, j: int) -> list[bytes]:
    items[i], items[j] = items[j], items[i]
    return items


def _truncated(bundle: Bundle, _ids: dict[str, str]) -> None:
    bundle.put_lines(bundle.lines()[:-2])


def _ledger(bundle: Bundle, change: Callable[[dict], None]) -> None:
    ledger = bundle.json("ledger.json")
    for dataset in ledger["datasets"]:
        change(dataset)
    bundle.put_json("ledger.json", ledger)


def _charge_less(ids: dict[str, str]) -> Callable[[dict], None]:
    def change(dataset: dict) -> None:
        for line in dataset["lines"]:
            if line["job_id"] == ids["job_a1"]:
                line["epsilon_charged"] = 0.6

    return change


def _drop_line(ids: dict[str, str]) -> Callable[[dict], None]:
    def change(dataset: dict) -> None:
        dataset["lines"] = [line for line in dataset["lines"] if line["job_id"] != ids["job_a2"]]

    return change


def _lower_total(dataset: dict) -> None:
    dataset["budget"]["epsilon_total"] = 1.0
    dataset["budget"]["epsilon_remaining"] = 0.0


def _swap_certificates(bundle: Bundle, ids: dict[str, str]) -> None:
    a, b = f"certificates/{ids['release_a1']}.json", f"certificates/{ids['release_b1']}.json"
    bundle.files[a], bundle.files[b] = bundle.files[b], bundle.files[a]


def _edit_certificate(bundle: Bundle, ids: dict[str, str]) -> None:
    name = f"certificates/{ids['release_a2']}.json"
    certificate = bundle.json(name)
    certificate["epsilon"] = 0.1
    bundle.put_json(name, certificate)


def _hide_the_audit(bundle: Bundle, ids: dict[str, str]) -> None:
    name = f"certificates/{ids['release_a2']}.json"
    certificate = bundle.json(name)
    certificate["empirical_audit"] = {"status": "done", "epsilon_lower_bound": 0.0}
    bundle.put_json(name, certificate)


def _edit_manifest(bundle: Bundle, _ids: dict[str, str]) -> None:
    manifest = bundle.manifest
    manifest["generated_by"] = "key:innocent"
    bundle.put_json("manifest.json", manifest)


def _narrow_the_range(bundle: Bundle, _ids: dict[str, str]) -> None:
    manifest = bundle.manifest
    manifest["scope"]["since"] = bundle.events()[1]["at"]
    bundle.put_json("manifest.json", manifest)


def _then(*steps: Callable[[Bundle, dict[str, str]], None]) -> Callable[[Bundle, dict[str, str]], None]:
    def change(bundle: Bundle, ids: dict[str, str]) -> None:
        for step in steps:
            step(bundle, ids)

    return change


def _rehash(bundle: Bundle, _ids: dict[str, str]) -> None:
    bundle.rehash()


def _resign(bundle: Bundle, _ids: dict[str, str]) -> None:
    bundle.resign(OTHER_KEY)


def _follow(bundle: Bundle, _ids: dict[str, str]) -> None:
    bundle.follow_events()


def _rechain(bundle: Bundle, _ids: dict[str, str]) -> None:
    bundle.rechain()


EDITED = "hash does not match the event's content: the event was edited"
MOVED = "an event was deleted, inserted or moved here"
CHANGED = "its SHA-256 is not the one in the manifest: the file was changed after export"
UNSIGNED = "manifest.sig does not verify against manifest.json"

TAMPERINGS: dict[str, Tamper] = {
    "edit an event": Tamper(_edit_event, EDITED),
    "edit an event, rehash and re-sign": Tamper(_then(_edit_event, _resign), EDITED),
    "edit an event and rebuild the chain after it, re-signed": Tamper(
        _then(_edit_event, _rechain, _follow, _resign), RESIGNED, self_consistent=True
    ),
    "delete an event": Tamper(lambda b, _: b.put_lines(b.lines()[:4] + b.lines()[5:]), MOVED),
    "reorder two events": Tamper(lambda b, _: b.put_lines(_swap(b.lines(), 3, 4)), MOVED),
    "insert a copy of an event": Tamper(lambda b, _: b.put_lines(b.lines()[:5] + b.lines()[4:]), MOVED),
    "delete the first event": Tamper(
        lambda b, _: b.put_lines(b.lines()[1:]), "tenant_seq 2 where 1 was expected"
    ),
    "truncate the tail": Tamper(_truncated, "events were cut off the end"),
    "truncate and rehash the manifest without re-signing": Tamper(_then(_truncated, _rehash), UNSIGNED),
    "truncate, rewrite the manifest's ends and re-sign": Tamper(
        _then(_truncated, _follow, _resign), RESIGNED, self_consistent=True
    ),
    "edit ledger numbers": Tamper(lambda b, ids: _ledger(b, _charge_less(ids)), f"ledger.json: {CHANGED}"),
    "edit ledger numbers and re-sign": Tamper(
        _then(lambda b, ids: _ledger(b, _charge_less(ids)), _resign), "but its job lines sum to"
    ),
    "edit ledger numbers and re-sign (certificate disagrees)": Tamper(
        _then(lambda b, ids: _ledger(b, _charge_less(ids)), _resign), "says its release spent epsilon 1.0"
    ),
    "edit ledger numbers and re-sign (the log disagrees)": Tamper(
        _then(lambda b, ids: _ledger(b, _charge_less(ids)), _resign), "epsilon 1.0, but the ledger says 0.6"
    ),
    "remove a ledger line and re-sign": Tamper(
        _then(lambda b, ids: _ledger(b, _drop_line(ids)), _resign), "but the ledger has no line for it"
    ),
    "lower a total budget below what was spent and re-sign": Tamper(
        _then(lambda b, _: _ledger(b, _lower_total), _resign), "exceeds the total budget 1.0"
    ),
    "swap two certificates": Tamper(_swap_certificates, "certificates were swapped or renamed"),
    "swap two certificates and re-sign": Tamper(
        _then(_swap_certificates, _resign), "certificates were swapped or renamed"
    ),
    "edit a certificate's epsilon and re-sign": Tamper(
        _then(_edit_certificate, _resign),
        "but certificates/{release_a2}.json says its release spent epsilon 0.1",
    ),
    "add an empirical audit to a certificate and re-sign": Tamper(
        _then(_hide_the_audit, _resign),
        "certificates/{release_a2}.json is not the certificate the audit log recorded when release",
    ),
    "drop a certificate": Tamper(
        lambda b, ids: b.files.pop(f"certificates/{ids['release_a2']}.json"),
        "is in the manifest but not in the bundle: a file was removed",
    ),
    "drop a certificate and re-sign": Tamper(
        _then(lambda b, ids: b.files.pop(f"certificates/{ids['release_a2']}.json"), _resign),
        "release {release_a2} of job {job_a2} has no certificate in the bundle",
    ),
    "add a file": Tamper(
        lambda b, _: b.files.update({"notes.txt": b"hi"}),
        "notes.txt is in the bundle but not in the manifest",
    ),
    "add a second ledger.json": Tamper(
        lambda b, _: b.extra.append(("ledger.json", b"{}")), "is in the zip 2 times"
    ),
    "re-sign with another key": Tamper(_resign, RESIGNED, self_consistent=True),
    "claim a narrower time range and re-sign": Tamper(
        _then(_narrow_the_range, _resign), "before the bundle's start"
    ),
    "edit the manifest without re-signing": Tamper(_edit_manifest, UNSIGNED),
    "replace the public key, keep the signature": Tamper(
        lambda b, _: b.files.update({"public_key.pem": Bundle.pem_of(OTHER_KEY)}), "the key file was replaced"
    ),
    "remove the signature": Tamper(lambda b, _: b.files.pop("manifest.sig"), "manifest.sig is missing"),
    "garble the signature": Tamper(
        lambda b, _: b.files.update({"manifest.sig": b"c2lnbmVk\n"}), "it is not an Ed25519 signature"
    ),
    "remove the manifest": Tamper(lambda b, _: b.files.pop("manifest.json"), "manifest.json is missing"),
}


@pytest.mark.parametrize("name", TAMPERINGS)
def test_every_tampering_is_caught(evidence: Evidence, tmp_path: Path, name: str):
    tamper = TAMPERINGS[name]
    bundle = Bundle(evidence.bundle)
    tamper.change(bundle, evidence.ids)
    expected = tamper.expected.format(**evidence.ids)
    data = bundle.to_bytes()
    trusted = check(tmp_path, data, trusted=evidence.pem)
    assert not trusted.ok
    assert any(expected in problem for problem in trusted.problems), trusted.problems
    alone = check(tmp_path, data, trusted=None)
    if tamper.self_consistent:
        assert alone.ok and alone.trusted_key is None, alone.problems
    else:
        assert not alone.ok
        if expected != RESIGNED:
            assert any(expected in problem for problem in alone.problems), alone.problems


def test_a_certificate_changed_in_the_database_fails_a_bundle_the_service_signs(
    evidence: Evidence, tmp_path: Path
):
    # Someone with write access to the database (not to the signing key) edits a certificate;
    # the service then signs the edited one, but the log recorded the original's digest.
    release_id = evidence.ids["release_b1"]
    with transaction(evidence.service.sessions) as session:
        release = session.get(Release, release_id)
        assert release is not None
        original = dict(release.certificate)
        # Nothing else in the bundle checks this field: only the logged digest can catch it.
        release.certificate = {**original, "empirical_audit": {"status": "done", "epsilon_lower_bound": 0.0}}
    try:
        response = evidence.download()
        assert response.status_code == 200, response.text
        result = check(tmp_path, response.content, trusted=evidence.pem)
    finally:
        with transaction(evidence.service.sessions) as session:
            release = session.get(Release, release_id)
            assert release is not None
            release.certificate = original
    assert not result.ok
    assert any(
        f"certificates/{release_id}.json is not the certificate the audit log recorded" in problem
        for problem in result.problems
    ), result.problems
    assert check(tmp_path, evidence.download().content, trusted=evidence.pem).ok


def test_a_file_that_is_no_zip_is_no_bundle(tmp_path: Path):
    result = check(tmp_path, b"PK\x03\x04 not really a zip", trusted=None)
    assert not result.ok and "is not a zip archive" in result.problems[0]


# -- the command line and the web form ----------------------------------------------------


def test_cli_exports_and_verifies_with_and_without_the_trusted_key(
    evidence: Evidence, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    server = ["--url", evidence.service.url, "--key", evidence.tokens["auditor"]]
    path, key = tmp_path / "evidence.zip", tmp_path / "service.pem"
    key.write_bytes(evidence.pem)
    assert main(["audit", "export", "-o", str(path), "--dataset", evidence.ids["dataset_b"], *server]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {path}; check it with: dpsynth audit verify")
    assert main(["audit", "verify", str(path), "--public-key", str(key)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: audit bundle of dataset {evidence.ids['dataset_b']}")
    assert "NOTE" not in out
    assert main(["audit", "verify", str(path)]) == 0
    assert (
        "NOTE: no --public-key given, so this checked only that the bundle is consistent"
        in capsys.readouterr().out
    )

    forged = Bundle(path.read_bytes())
    forged.resign(OTHER_KEY)
    path.write_bytes(forged.to_bytes())
    assert main(["audit", "verify", str(path), "--public-key", str(key)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED:") and RESIGNED in out

    plain = tmp_path / "audit.jsonl"
    assert main(["audit", "export", "-o", str(plain), *server]) == 0
    assert main(["audit", "verify", str(plain)]) == 0  # plain exports verify as before
    assert main(["audit", "verify", str(plain), "--public-key", str(key)]) == 2
    assert main(["audit", "export", "-o", str(plain), "--dataset", "x", *server]) == 2
    assert "make an evidence bundle: write it to a .zip" in capsys.readouterr().err


def _browser(service: LiveService) -> httpx.Client:
    return httpx.Client(base_url=service.url, follow_redirects=False, timeout=60)


def _log_in(service: LiveService, client: httpx.Client, role: Role, name: str) -> httpx.Client:
    with transaction(service.sessions) as session:
        create_user(session, tenant_id=service.tenant("acme"), role=role, name=name, password=PASSWORD)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/ui/login").text)
    assert token is not None
    done = client.post("/ui/login", data={"name": name, "password": PASSWORD, "csrf_token": token.group(1)})
    assert done.status_code == 303
    return client


def test_the_auditors_page_offers_bundles_per_dataset_and_range(evidence: Evidence, tmp_path: Path):
    ids = evidence.ids
    fingerprint = Bundle(evidence.bundle).manifest["public_key"]["fingerprint"]
    with _browser(evidence.service) as client:
        _log_in(evidence.service, client, Role.auditor, "ada")
        page = client.get("/ui/evidence")
        assert page.status_code == 200
        assert fingerprint in page.text and "Evidence bundles" in page.text
        assert f'href="/ui/evidence/bundle?dataset_id={ids["dataset_a"]}"' in page.text
        assert ids["globex_dataset"] not in page.text
        one = client.get(
            "/ui/evidence/bundle", params={"dataset_id": ids["dataset_a"], "since": "", "until": ""}
        )
        assert one.status_code == 200 and one.headers["content-type"] == "application/zip"
        assert check(tmp_path, one.content, trusted=evidence.pem).ok
        today = Bundle(one.content).events()[-1]["at"][:10]
        ranged = client.get("/ui/evidence/bundle", params={"dataset_id": "", "since": today, "until": today})
        assert check(tmp_path, ranged.content, trusted=evidence.pem).ok
        assert Bundle(ranged.content).manifest["scope"]["until"] == f"{today}T23:59:59.999999Z"
        pem = client.get("/ui/evidence/public-key.pem")
        assert pem.status_code == 200 and pem.content == evidence.pem
        bad = client.get("/ui/evidence/bundle", params={"since": "31/01/2025"})
        assert bad.status_code == 422 and "is not a date" in bad.text
    with _browser(evidence.service) as client:
        _log_in(evidence.service, client, Role.custodian, "cora")
        assert client.get("/ui/evidence").status_code == 403


def test_bundles_verify_on_any_database(service_any_db: LiveService, tmp_path: Path):
    with service_any_db.client(service_any_db.key("custodian")) as client:
        dataset_id = dataset_with_budget(client, epsilon=1.0)
        succeed(service_any_db, submit(client, dataset_id, 0.5), epsilon=0.5)
        submit(client, dataset_id, 0.25)
    with service_any_db.client(service_any_db.key("auditor")) as client:
        response = client.get("/audit/bundles", params={"dataset_id": dataset_id})
        published = client.get("/audit/public-key").json()["public_key_pem"].encode()
    assert response.status_code == 200, response.text
    result = check(tmp_path, response.content, trusted=published)
    assert result.ok, result.problems
    assert result.manifest is not None and result.manifest.counts["jobs"] == 2
