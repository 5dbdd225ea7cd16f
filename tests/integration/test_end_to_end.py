"""The whole flow through real processes: ``dpsynth serve`` (API + embedded worker) and the CLI.

upload -> schema -> budget -> job -> progress -> release download -> audit export -> verify.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.conftest import make_table
from tests.integration.processes import Server, cli, service_env


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[dict[str, str], Server]]:
    env = service_env(tmp_path / "data")
    cli(env, "admin", "create-tenant", "acme")
    server = Server(env, log=tmp_path / "serve.log")
    try:
        yield env, server
    finally:
        server.stop()


def test_custodian_flow_by_cli_then_auditor_verifies_the_log(stack, tmp_path: Path):
    env, server = stack
    custodian = cli(env, "admin", "create-key", "--tenant", "acme", "--role", "custodian").stdout.strip()
    auditor = cli(env, "admin", "create-key", "--tenant", "acme", "--role", "auditor").stdout.strip()
    as_custodian = {**env, "DPSYNTH_API_KEY": custodian}

    table = tmp_path / "patients.csv"
    make_table(800, seed=3).to_csv(table, index=False)
    uploaded = cli(as_custodian, "upload", str(table), "--epsilon", "2", "--quiet").stdout
    dataset_id = uploaded.split()[1].rstrip(":")
    assert "800 rows, 6 columns" in uploaded
    assert "region: categorical" in uploaded

    schema = tmp_path / "schema.json"
    schema.write_text(
        json.dumps(
            {
                "target": "outcome",
                "columns": {
                    "age": {"kind": "integer", "bounds": [18, 90], "nullable": False},
                    "outcome": {"kind": "categorical", "categories": ["no", "yes"], "nullable": False},
                },
            }
        )
    )
    reviewed = json.loads(cli(as_custodian, "datasets", "schema", dataset_id, "--set", str(schema)).stdout)
    assert reviewed["target"] == "outcome"
    assert reviewed["columns"]["age"] == {"kind": "integer", "bounds": [18.0, 90.0], "nullable": False}
    assert reviewed["columns"]["income"] == {"kind": "continuous"}

    done = cli(
        as_custodian, "jobs", "submit", "--dataset", dataset_id, "--epsilon", "1", "--rows", "300",
        "--seed", "7", "--wait", "--interval", "0.3", "--quiet",
    )  # fmt: skip
    assert "succeeded (100%, done)" in done.stdout, done.stdout + done.stderr
    job_id = done.stdout.split()[1]
    release_id = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("release "))

    out, cert = tmp_path / "release.parquet", tmp_path / "cert.json"
    cli(
        as_custodian,
        "releases",
        "download",
        release_id,
        "-o",
        str(out),
        "--certificate",
        str(cert),
        "--quiet",
    )
    released = pd.read_parquet(out)
    assert len(released) == 300
    assert list(released.columns) == ["age", "income", "smoker", "region", "children", "outcome"]
    assert released["age"].between(18, 90).all()  # declared public bounds, not nullable
    assert set(released["outcome"]) <= {"no", "yes"}
    certificate = json.loads(cert.read_text())
    assert 0 < certificate["epsilon"] <= 1.0
    assert certificate["schema"]["columns"]["age"]["kind_source"] == "declared"
    assert certificate["service"]["job_id"] == job_id
    # The worker audited the release's mechanisms on canaries, outside the dataset's budget.
    audit = certificate["empirical_audit"]
    assert audit["status"] == "done" and audit["dataset_budget_spent"] == 0.0
    assert 0 <= audit["epsilon_lower_bound"] <= certificate["epsilon"]
    assert audit["canaries"] == 256 and audit["attacks"][0]["attack"] == "measured marginals"

    # Another table from the same model: post-processing, so the budget does not move.
    more = cli(as_custodian, "releases", "create", job_id, "--rows", "123", "--wait", "--interval", "0.3")
    assert more.stdout.strip().endswith("ready, 123 rows")
    second = more.stdout.split()[1].rstrip(":")
    cli(as_custodian, "releases", "download", second, "-o", str(tmp_path / "more.csv"), "--quiet")
    assert len(pd.read_csv(tmp_path / "more.csv")) == 123

    budget = cli(as_custodian, "datasets", "budget", dataset_id).stdout
    assert f"job {job_id}  succeeded" in budget
    with httpx.Client(base_url=server.url, headers={"X-API-Key": custodian}) as client:
        ledger = client.get(f"/datasets/{dataset_id}/ledger").json()
    assert ledger["budget"]["epsilon_charged"] == pytest.approx(certificate["epsilon"])
    assert ledger["budget"]["epsilon_remaining"] == pytest.approx(2 - certificate["epsilon"])

    as_auditor = {**env, "DPSYNTH_API_KEY": auditor}
    for suffix in ("jsonl", "csv"):
        log = tmp_path / f"audit.{suffix}"
        cli(as_auditor, "audit", "export", "-o", str(log))
        verified = cli(env, "audit", "verify", str(log))
        assert verified.stdout.startswith("OK:")
    actions = [json.loads(line)["action"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    for action in ("dataset.upload", "schema.update", "budget.update", "job.queued", "job.running",
                   "job.succeeded", "release.created", "release.download", "audit.export"):  # fmt: skip
        assert action in actions

    # The signed evidence bundle, checked against the key the operator published.
    bundle, key = tmp_path / "evidence.zip", tmp_path / "service.pem"
    cli(as_auditor, "audit", "export", "-o", str(bundle), "--dataset", dataset_id)
    cli(env, "admin", "public-key", "-o", str(key))
    verified = cli(env, "audit", "verify", str(bundle), "--public-key", str(key))
    assert verified.stdout.startswith(f"OK: audit bundle of dataset {dataset_id}"), verified.stdout
    assert "2 certificate(s)" in verified.stdout

    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    refused = cli(env, "audit", "verify", str(tampered), check=False)
    assert refused.returncode == 1
    assert "FAILED" in refused.stdout


def test_cli_client_errors_are_one_line(stack, tmp_path: Path):
    env, _ = stack
    no_key = cli(env, "jobs", "status", "nope", check=False)
    assert no_key.returncode == 2
    assert no_key.stderr.strip() == "dpsynth: error: no API key: pass --key or set DPSYNTH_API_KEY"
    bad_key = cli(
        {**env, "DPSYNTH_API_KEY": "dps_0000000000000000_" + "x" * 43}, "jobs", "status", "nope", check=False
    )
    assert bad_key.returncode == 2
    assert bad_key.stderr.strip() == "dpsynth: error: server said 401: invalid or revoked API key"


def test_batch_manifest_is_checked_then_admitted_whole(stack, tmp_path: Path):
    env, _ = stack
    token = cli(env, "admin", "create-key", "--tenant", "acme", "--role", "custodian").stdout.strip()
    as_custodian = {**env, "DPSYNTH_API_KEY": token}
    make_table(400, seed=5).to_csv(tmp_path / "clinic.csv", index=False)
    over = tmp_path / "over.yaml"
    over.write_text(
        "jobs:\n"
        "  - {file: clinic.csv, budget: {epsilon: 1}, epsilon: 0.6, rows: 10}\n"
        "  - {file: clinic.csv, budget: {epsilon: 1}, epsilon: 0.6, rows: 10}\n"
    )
    refused = cli(as_custodian, "batch", "submit", str(over), check=False)
    assert refused.returncode == 2
    assert "clinic.csv: its jobs need epsilon 1.2 but its budget is 1" in refused.stderr
    assert "nothing was uploaded or submitted" in refused.stderr
    assert cli(as_custodian, "datasets", "list").stdout == ""  # nothing was uploaded

    good = tmp_path / "good.yaml"
    good.write_text(
        "jobs:\n"
        "  - {file: clinic.csv, budget: {epsilon: 1}, epsilon: 0.5, rows: 20, seed: 1}\n"
        "  - {file: clinic.csv, budget: {epsilon: 1}, epsilon: 0.5, rows: 30, seed: 2}\n"
    )
    done = cli(as_custodian, "batch", "submit", str(good), "--wait", "--interval", "0.3", "--quiet")
    assert "2 jobs queued" in done.stdout
    assert done.stdout.count(": succeeded, release ") == 2, done.stdout + done.stderr
    assert len(cli(as_custodian, "datasets", "list").stdout.strip().splitlines()) == 1  # uploaded once
