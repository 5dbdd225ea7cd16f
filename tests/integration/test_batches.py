"""Batches from a manifest: admitted whole, or refused whole before anything runs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.helpers import dataset_with_budget
from tests.integration.live import LiveService


def test_a_batch_within_budget_queues_every_job(service_any_db: LiveService):
    with service_any_db.client(service_any_db.key("custodian")) as client:
        a = dataset_with_budget(client, epsilon=1.0)
        b = dataset_with_budget(client, epsilon=2.0)
        jobs = [{"dataset_id": a, "epsilon": 0.5, "rows": 5}] * 2 + [
            {"dataset_id": b, "epsilon": 2.0, "rows": 9}
        ]
        response = client.post("/batches", json={"jobs": jobs})
        assert response.status_code == 201, response.text
        batch = response.json()
        assert [(j["dataset_id"], j["state"]) for j in batch["jobs"]] == [
            (a, "queued"),
            (a, "queued"),
            (b, "queued"),
        ]
        assert client.get(f"/batches/{batch['id']}").json() == batch
        assert client.get(f"/datasets/{a}/ledger").json()["budget"]["epsilon_remaining"] == pytest.approx(0)


def test_a_batch_over_one_datasets_budget_is_refused_whole(service_any_db: LiveService):
    with service_any_db.client(service_any_db.key("custodian")) as client:
        a = dataset_with_budget(client, epsilon=1.0)
        b = dataset_with_budget(client, epsilon=1.0)
        jobs = [
            {"dataset_id": b, "epsilon": 0.5, "rows": 5},
            {"dataset_id": a, "epsilon": 0.6, "rows": 5},
            {"dataset_id": a, "epsilon": 0.6, "rows": 5},  # a's total 1.2 > 1.0
        ]
        response = client.post("/batches", json={"jobs": jobs})
        assert response.status_code == 409
        assert response.json()["detail"].startswith(
            f"job 3 of the batch (dataset {a}): the job needs epsilon 0.6"
        )
        assert response.json()["detail"].endswith("nothing was submitted")
        assert client.get("/jobs").json() == []  # not even the jobs that fitted
        for dataset in (a, b):
            assert client.get(f"/datasets/{dataset}/ledger").json()["budget"][
                "epsilon_remaining"
            ] == pytest.approx(1.0)


def test_batches_racing_for_the_same_budget_never_overspend(service_any_db: LiveService):
    """Ten batches of two 0.5 jobs over the same two datasets, in opposite orders: exactly two admitted."""
    token = service_any_db.key("custodian")
    with service_any_db.client(token) as client:
        a = dataset_with_budget(client, epsilon=1.0)
        b = dataset_with_budget(client, epsilon=1.0)

    def submit(i: int) -> int:
        order = [a, b] if i % 2 else [b, a]
        jobs = [{"dataset_id": d, "epsilon": 0.5, "rows": 5} for d in order]
        with service_any_db.client(token) as client:
            return client.post("/batches", json={"jobs": jobs}).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        codes = list(pool.map(submit, range(10)))
    assert sorted(codes) == [201] * 2 + [409] * 8
    with service_any_db.client(token) as client:
        for dataset in (a, b):
            budget = client.get(f"/datasets/{dataset}/ledger").json()["budget"]
            assert budget["epsilon_reserved"] == pytest.approx(1.0)
