"""A release re-derived offline from its model and certificate: the same table, the same epsilon."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.integration.helpers import csv_bytes, upload
from tests.integration.processes import Server, cli, service_env, wait_for

QUICK_JOB = {"epsilon": 0.5, "rows": 80, "generator_steps": 200, "discriminator_share": 0.0}


def test_first_and_later_releases_reproduce_from_the_model(tmp_path: Path):
    env = service_env(tmp_path / "data")
    cli(env, "admin", "create-tenant", "acme")
    custodian = cli(env, "admin", "create-key", "--tenant", "acme", "--role", "custodian").stdout.strip()
    auditor = cli(env, "admin", "create-key", "--tenant", "acme", "--role", "auditor").stdout.strip()
    server = Server(env, log=tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": custodian}, timeout=30) as client:
            dataset_id = upload(client, csv_bytes(300)).json()["id"]
            client.put(f"/datasets/{dataset_id}/budget", json={"epsilon": 1.0}).raise_for_status()
            job_id = client.post("/jobs", json={"dataset_id": dataset_id, **QUICK_JOB}).json()["id"]
            job = wait_for(
                lambda: (j := client.get(f"/jobs/{job_id}").json())["state"] in ("succeeded", "failed") and j,
                timeout=180,
                what="the job",
            )
            assert job["state"] == "succeeded", job
            later = client.post(f"/jobs/{job_id}/releases", json={"rows": 123}).json()["id"]
            wait_for(
                lambda: client.get(f"/releases/{later}").json()["state"] == "ready",
                timeout=60,
                what="release",
            )
            certificate = client.get(f"/releases/{later}/certificate").json()
        with httpx.Client(base_url=server.url, headers={"X-API-Key": auditor}, timeout=30) as client:
            assert client.get(f"/releases/{later}/model").status_code == 403  # a model draws data
        client_env = {**env, "DPSYNTH_API_KEY": custodian}
        for release_id, rows in ((job["release_id"], 80), (later, 123)):
            done = cli(client_env, "releases", "reproduce", release_id, "-o", str(tmp_path / release_id))
            assert f"release {release_id} reproduces: {rows} rows re-drawn" in done.stdout
            assert (tmp_path / release_id / f"model-{release_id}.safetensors").is_file()
    finally:
        server.stop()
    assert certificate["service"]["reproduce"]["rows"] == 123
    assert certificate["service"]["reproduce"]["sample_seed"] == certificate["service"]["sample_seed"]
    # The certificate kept for the release is what a re-derivation is checked against: change it, it fails.
    path = tmp_path / later / f"certificate-{later}.json"
    text = path.read_text().replace(certificate["service"]["reproduce"]["table_sha256"], "0" * 64)
    path.write_text(text)
    import json

    from models.reproduce import check_release

    problems = check_release(json.loads(text), tmp_path / later / f"model-{later}.safetensors")
    assert problems == ["re-drawing the release gave a different table (SHA-256 differs)"]
