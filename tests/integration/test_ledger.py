"""The budget ledger on SQLite and PostgreSQL: reservations, charges, and races for the last budget."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from service.core import jobs, ledger
from service.core.errors import BudgetExhaustedError, ConflictError
from service.core.orm import JobState
from tests.integration.helpers import dataset_with_budget
from tests.integration.live import LiveService


def test_submit_job_over_budget_is_409_with_what_remains(service: LiveService):
    with service.client(service.key("custodian")) as client:
        dataset_id = dataset_with_budget(client, epsilon=1.0)
        first = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": 0.7, "rows": 10})
        assert first.status_code == 201, first.text
        refused = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": 0.5, "rows": 10})
    assert refused.status_code == 409
    body = refused.json()
    assert body["epsilon_remaining"] == pytest.approx(0.3)
    assert "has only epsilon 0.3" in body["detail"]


def test_concurrent_jobs_race_for_the_last_budget(service_any_db: LiveService):
    """40 requests for 0.3 each against a budget of 1.0: exactly 3 win, on SQLite and PostgreSQL."""
    token = service_any_db.key("custodian")
    with service_any_db.client(token) as client:
        dataset_id = dataset_with_budget(client, epsilon=1.0)

    def submit(_: int) -> int:
        with service_any_db.client(token) as client:
            return client.post(
                "/jobs", json={"dataset_id": dataset_id, "epsilon": 0.3, "rows": 10}
            ).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(submit, range(40)))
    assert sorted(codes) == [201] * 3 + [409] * 37
    with service_any_db.client(token) as client:
        budget = client.get(f"/datasets/{dataset_id}/ledger").json()["budget"]
    assert budget["epsilon_reserved"] == pytest.approx(0.9)
    assert budget["epsilon_remaining"] == pytest.approx(0.1)


def test_charges_settle_once_and_return_the_unspent_reservation(service_any_db: LiveService):
    token = service_any_db.key("custodian")
    with service_any_db.client(token) as client:
        dataset_id = dataset_with_budget(client, epsilon=1.0)
        job_id = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": 0.6, "rows": 10}).json()[
            "id"
        ]
    with service_any_db.sessions() as session, session.begin():
        claimed = jobs.claim(session, job_id, owner="w1", lease_seconds=60)
        assert claimed is not None
    with service_any_db.sessions() as session, session.begin():
        assert jobs.claim(session, job_id, owner="w2", lease_seconds=60) is None  # a duplicate message
    with service_any_db.sessions() as session, session.begin():
        jobs.stop(session, job_id, owner="w1", state=JobState.cancelled, epsilon=0.25, error=None)
    with service_any_db.sessions() as session, session.begin(), pytest.raises(ConflictError):
        jobs.stop(session, job_id, owner="w1", state=JobState.failed, epsilon=0.6, error=None)
    with service_any_db.client(token) as client:
        budget = client.get(f"/datasets/{dataset_id}/ledger").json()["budget"]
    assert budget["epsilon_charged"] == pytest.approx(0.25)
    assert budget["epsilon_reserved"] == 0
    assert budget["epsilon_remaining"] == pytest.approx(0.75)


def test_expired_lease_is_requeued_then_failed_and_charged_the_whole_reservation(service_any_db: LiveService):
    token = service_any_db.key("custodian")
    with service_any_db.client(token) as client:
        dataset_id = dataset_with_budget(client, epsilon=1.0)
        job_id = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": 0.4, "rows": 5}).json()["id"]
    for attempt in (1, 2):
        with service_any_db.sessions() as session, session.begin():
            assert jobs.claim(session, job_id, owner=f"w{attempt}", lease_seconds=-1) is not None  # expired
        with service_any_db.sessions() as session, session.begin():
            done = jobs.reconcile(session)
        assert done == (jobs.Reconciled([job_id], []) if attempt == 1 else jobs.Reconciled([], [job_id]))
        with service_any_db.client(token) as client:
            job = client.get(f"/jobs/{job_id}").json()
            budget = client.get(f"/datasets/{dataset_id}/ledger").json()["budget"]
        if attempt == 1:  # back in the queue, its reservation kept, nothing charged yet
            assert (job["state"], job["epsilon_charged"], budget["epsilon_reserved"]) == ("queued", None, 0.4)
    assert job["state"] == "failed"
    assert job["epsilon_charged"] == pytest.approx(0.4)
    assert "lease" in job["error"] and "2 times" in job["error"]
    assert budget["epsilon_reserved"] == 0
    with service_any_db.sessions() as session, session.begin():
        assert jobs.reconcile(session) == jobs.Reconciled([], [])


@pytest.mark.parametrize("how", ["worker died", "worker stopped"])
def test_cancelling_a_job_requeued_after_an_attempt_charges_its_reservation(service: LiveService, how: str):
    """Its checkpoint may hold spent budget (and the dead attempt may have spent more): never free."""
    token = service.key("custodian")
    with service.client(token) as client:
        dataset_id = dataset_with_budget(client, epsilon=1.0)
        job_id = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": 0.4, "rows": 5}).json()["id"]
    with service.sessions() as session, session.begin():
        jobs.claim(session, job_id, owner="w1", lease_seconds=-1 if how == "worker died" else 60)
    with service.sessions() as session, session.begin():
        if how == "worker died":
            assert jobs.reconcile(session).requeued == [job_id]
        else:
            jobs.hand_back(session, job_id, owner="w1", reason="shutdown")
    with service.client(token) as client:
        job = client.post(f"/jobs/{job_id}/cancel").json()
        budget = client.get(f"/datasets/{dataset_id}/ledger").json()["budget"]
    assert (job["state"], job["epsilon_charged"]) == ("cancelled", pytest.approx(0.4))
    assert budget["epsilon_remaining"] == pytest.approx(0.6)


def test_reserve_refuses_delta_at_or_above_one_over_n(service: LiveService):
    with service.client(service.key("custodian")) as client:
        dataset_id = dataset_with_budget(client, epsilon=1.0, delta=0.5)
        response = client.post(
            "/jobs", json={"dataset_id": dataset_id, "epsilon": 0.1, "delta": 0.01, "rows": 5}
        )
    assert response.status_code == 422
    assert "not below 1/n" in response.json()["detail"]


def test_budget_cannot_drop_below_what_is_used(service: LiveService):
    with service.client(service.key("custodian")) as client:
        dataset_id = dataset_with_budget(client, epsilon=1.0)
        client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": 0.8, "rows": 5})
        response = client.put(f"/datasets/{dataset_id}/budget", json={"epsilon": 0.5})
    assert response.status_code == 422
    assert "cannot go below" in response.json()["detail"]


def test_settle_refuses_a_charge_above_the_reservation(service: LiveService):
    with service.client(service.key("custodian")) as client:
        dataset_id = dataset_with_budget(client, epsilon=1.0)
        job_id = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": 0.2, "rows": 5}).json()["id"]
    with service.sessions() as session, session.begin():
        from service.core.orm import Job

        job = session.get(Job, job_id)
        with pytest.raises(ValueError, match="exceeds the reservation"):
            ledger.settle(job, state=JobState.succeeded, epsilon=0.3, delta=job.delta)


def test_budget_exhausted_error_carries_remaining():
    exc = BudgetExhaustedError("x", epsilon_remaining=0.1, delta_remaining=1e-6)
    assert (exc.epsilon_remaining, exc.delta_remaining) == (0.1, 1e-6)


def test_unclaimed_messages_are_sent_again_once_per_interval(service_any_db: LiveService):
    from service.core.jobs import stale_messages

    token = service_any_db.key("custodian")
    with service_any_db.client(token) as client:
        dataset_id = dataset_with_budget(client, epsilon=1.0)
        body = {"dataset_id": dataset_id, "epsilon": 0.1, "rows": 5}
        waiting, claimed = (client.post("/jobs", json=body).json()["id"] for _ in range(2))
    with service_any_db.sessions() as session, session.begin():
        jobs.claim(session, claimed, owner="w1", lease_seconds=60)
    with service_any_db.sessions() as session, session.begin():
        assert stale_messages(session, older_than=0) == ([waiting], [])
    with service_any_db.sessions() as session, session.begin():
        assert stale_messages(session, older_than=60) == ([], [])  # just re-sent
