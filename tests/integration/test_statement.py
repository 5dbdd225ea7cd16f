"""The budget statement against a live API: HTML and PDF say the same numbers, the PDF renders.

One dataset gets a life worth a statement, through the API and the job state machine as a
worker drives it (without training: the certificate is built by the engine's own
``build_certificate`` from a charged ledger): a release with an empirical audit, a second
table drawn from the same model, a job cancelled while training, one cancelled before it ran,
one that failed, one still queued, and a download. The PDF is read back with pdftotext and
drawn with pdftoppm; set DPSYNTH_STATEMENT_PAGES to a folder to keep the page images.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sqlalchemy import select

from models.accounting import Mechanism, PrivacyLedger
from models.certificate import build_certificate
from models.config import SynthesizerConfig
from models.schema import Schema
from service.cli import main as cli
from service.core import audit, jobs, releases, statement
from service.core.audit import AuditEvent
from service.core.db import transaction
from service.core.orm import Dataset, Job, JobState, Release, Role, new_id, utcnow
from service.core.security import create_user
from service.core.statement_document import document
from service.core.statement_render import render_html
from service.core.statement_words import delta_text, eps_text
from service.core.storage import Storage
from tests.integration.helpers import csv_bytes, upload
from tests.integration.live import LiveService, live_service, service_settings
from tests.integration.test_web import PASSWORD, _browser, _log_in

pytestmark = pytest.mark.skipif(
    shutil.which("pdftotext") is None or shutil.which("pdftoppm") is None,
    reason="poppler-utils (pdftotext, pdftoppm) is not installed; scripts/system-packages.sh installs it",
)

WORKER = "node-7:4711"
NAME = "Patients 2024 — cardiology (≥ 18 years)"
LOWER_BOUND = {  # the keys the worker writes (workers/privacy_audit.py)
    "status": "done",
    "method": "one-run canary audit (Steinke, Nasr & Jagielski 2023)",
    "epsilon_lower_bound": 0.1234,
    "epsilon_ceiling": 3.89,
    "confidence": 0.95,
    "canaries": 256,
    "guesses": 128,
    "correct": 81,
    "attack": "measured marginals",
    "base": "rows drawn from this release's model (public), plus canaries",
}


def certificate(epsilon_target: float, delta: float) -> dict[str, Any]:
    """A certificate as the engine writes it, from a ledger charged like a small fit."""
    ledger = PrivacyLedger(epsilon=epsilon_target, delta=delta)
    for name, sigma in [
        ("domain:age:bounds", 20.0),
        ("domain:age:cells", 20.0),
        ("domain:region:categories", 20.0),
        ("marginal:age", 25.0),
        ("marginal:age,region", 25.0),
    ]:
        ledger.charge(Mechanism(name=name, noise_multiplier=sigma))
    ledger.charge(Mechanism(name="dp-sgd:discriminator", noise_multiplier=4.0, sample_rate=0.02, steps=100))
    cert = build_certificate(
        ledger=ledger,
        config=SynthesizerConfig(epsilon=epsilon_target, delta=delta),
        schema=Schema.from_json({"columns": {}}),
        domains=[],
        input_sha256="f" * 64,
        rows=600,
        row_count_public=False,
        completed=True,
    )
    assert 0 < cert["epsilon"] <= epsilon_target
    return cert


@dataclass
class Story:
    service: LiveService
    tokens: dict[str, str]
    dataset_id: str
    sha256: str
    expected: dict[str, str]  # what both formats must say, as they format it


def _submit(client: Any, dataset_id: str, epsilon: float) -> str:
    response = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": epsilon, "rows": 5})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _claim(service: LiveService, job_id: str) -> Job:
    with transaction(service.sessions) as session:
        job = jobs.claim(session, job_id, owner=WORKER, lease_seconds=60, device="cpu")
        assert job is not None
        return job


def _store_table(service: LiveService, release_id: str) -> None:
    buffer = io.BytesIO()
    pd.DataFrame({"age": [30, 41], "region": ["north", "south"]}).to_parquet(buffer, index=False)
    with Storage(service.settings.storage).open_write(releases.release_key(release_id)) as fh:
        fh.write(buffer.getvalue())


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    with live_service(service_settings(tmp_path_factory.mktemp("statement") / "data")) as service:
        tokens = {role: service.key(role) for role in ("custodian", "auditor", "analyst")}
        with service.client(tokens["custodian"]) as client:
            created = upload(client, csv_bytes(), name=NAME)
            assert created.status_code == 201, created.text
            dataset_id = created.json()["id"]
            budget = client.put(f"/datasets/{dataset_id}/budget", json={"epsilon": 3.0, "delta": 1e-5})
            assert budget.status_code == 200, budget.text
            sha256 = client.get(f"/datasets/{dataset_id}").json()["sha256"]
            schema = {"columns": {"age": {"kind": "integer", "bounds": [0, 120]}}}
            assert client.put(f"/datasets/{dataset_id}/schema", json=schema).status_code == 200
            trained, stopped, never_ran, failed, waiting = (
                _submit(client, dataset_id, eps) for eps in (1.0, 0.5, 0.4, 0.3, 0.25)
            )
            assert client.post(f"/jobs/{never_ran}/cancel").status_code == 200
            # A batch with a job on this dataset, and one on another dataset that must not show.
            other = upload(client, csv_bytes(), name="another table").json()["id"]
            assert client.put(f"/datasets/{other}/budget", json={"epsilon": 1.0}).status_code == 200
            for batch in (
                [{"dataset_id": dataset_id, "epsilon": 0.05, "rows": 5}],
                [{"dataset_id": other, "epsilon": 0.1, "rows": 5}],
            ):
                assert client.post("/batches", json={"jobs": batch}).status_code == 201

        # J1 trains and succeeds as a worker would; its first release carries an empirical audit.
        job = _claim(service, trained)
        cert = certificate(job.epsilon, job.delta)
        first = new_id()
        cert["service"] = {"job_id": trained, "dataset_id": dataset_id, "release_id": first, "sample_seed": 1}
        cert["empirical_audit"] = LOWER_BOUND
        _store_table(service, first)
        with transaction(service.sessions) as session:
            release = Release(
                id=first,
                tenant_id=job.tenant_id,
                job_id=trained,
                dataset_id=dataset_id,
                rows=12345,
                storage_key=releases.release_key(first),
                certificate=cert,
            )
            jobs.succeed(
                session, trained, owner=WORKER, epsilon=cert["epsilon"], model_key="models/x", release=release
            )
        # J2 is cancelled mid-training and charged what it spent; J4 fails and is charged its reservation.
        _claim(service, stopped)
        _claim(service, failed)
        with transaction(service.sessions) as session:
            jobs.stop(
                session,
                stopped,
                owner=WORKER,
                state=JobState.cancelled,
                epsilon=0.2,
                error="cancelled by request",
            )
            jobs.stop(
                session,
                failed,
                owner=WORKER,
                state=JobState.failed,
                epsilon=0.3,
                error="internal error: boom",
            )

        with service.client(tokens["custodian"]) as client:
            again = client.post(f"/jobs/{trained}/releases", json={"rows": 1_000_000})
            assert again.status_code == 202, again.text
        second = again.json()["id"]
        _store_table(service, second)
        with transaction(service.sessions) as session:
            releases.complete(session, second, rows=1_000_000, reproduce={}, actor=f"worker:{WORKER}")
        with service.client(tokens["analyst"]) as client:
            assert client.get(f"/releases/{first}/download").status_code == 200

        charged = cert["epsilon"] + 0.2 + 0.3
        delta_each = 1e-6  # the default job delta: a tenth of the total
        expected = {
            "name": NAME,
            "budget": eps_text(3.0),
            "delta budget": delta_text(1e-5),
            "charged": eps_text(charged),
            "delta charged": delta_text(3 * delta_each),
            "reserved": eps_text(0.3),
            "remaining": eps_text(3.0 - charged - 0.3),
            "batch": "submitted a batch including J6",
            "release epsilon": eps_text(cert["epsilon"]),
            "lower bound": "≥ 0.1234 (95% conf.)",
            "audit ceiling": "would have shown ε ≥ 3.89",
            "second release rows": "1,000,000",
            "failed why": "internal error: boom",
            "stopped why": "cancelled while training",
            "never ran why": "cancelled before it started: charged nothing",
        }
        with transaction(service.sessions) as session:
            assert {j.id: j.state for j in session.scalars(select(Job))}[waiting] == JobState.queued
        yield Story(
            service=service,
            tokens=tokens,
            dataset_id=dataset_id,
            sha256=sha256,
            expected=expected,
        )


def _get(story: Story, role: str, fmt: str) -> Any:
    with story.service.client(story.tokens[role]) as client:
        response = client.get(f"/datasets/{story.dataset_id}/statement", params={"format": fmt})
    assert response.status_code == 200, response.text
    return response


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _says_everything(text: str, story: Story) -> None:
    text = _flat(text)
    missing = {name: value for name, value in story.expected.items() if value not in text}
    assert missing == {}, text[:3000]
    # The second table is drawn from the same model: the same certificate, audit included.
    assert text.count(story.expected["lower bound"]) == 2
    assert story.sha256 not in text and "f" * 64 not in text, "no fact about the raw upload"


def test_html_statement_says_the_budget_every_release_and_what_remains(story: Story):
    response = _get(story, "auditor", "html")
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    html = response.text.replace("&#34;", '"').replace("&#39;", "'").replace("&amp;", "&")
    _says_everything(html, story)
    for label in ("J1", "J2", "J3", "J4", "J5", "J6", "R1", "R2"):
        assert f"<td>{label}</td>" in html
    assert "J7" not in html and html.count("submitted a batch") == 1, "another dataset's batch"
    assert "<script" not in html and "http://" not in html and "https://" not in html


def test_statement_is_audited_and_prints_its_own_place_in_the_chain(story: Story):
    html = _get(story, "custodian", "html").text
    with story.service.sessions() as session:
        event = session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).one()
        assert audit.head_hash(session) == event.hash
    assert (event.action, event.object_id, event.actor) == (
        "statement.generated",
        story.dataset_id,
        f"key:{story.tokens['custodian'].split('_')[1]}",
    )
    for value in (event.hash, event.tenant_hash, f">{event.seq}<", f">{event.tenant_seq}<"):
        assert value in html
    assert "generated a budget statement (HTML)" in html


def _pdf_text(path: Path) -> str:
    return subprocess.run(
        ["pdftotext", "-raw", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout


def test_pdf_statement_reads_the_same_and_renders_to_readable_pages(story: Story, tmp_path: Path):
    response = _get(story, "custodian", "pdf")
    assert response.headers["content-type"] == "application/pdf"
    disposition = response.headers["content-disposition"]
    assert re.fullmatch(
        rf'attachment; filename="statement-{story.dataset_id}-\d{{4}}-\d\d-\d\d\.pdf"', disposition
    )
    pdf = tmp_path / "statement.pdf"
    pdf.write_bytes(response.content)
    assert response.content.startswith(b"%PDF-")
    text = _pdf_text(pdf)
    _says_everything(text, story)
    assert "page 1 of " in text and "Privacy budget statement" in text

    subprocess.run(["pdftoppm", "-png", "-r", "60", str(pdf), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert 2 <= len(pages) <= 12
    for number, page in enumerate(pages, 1):
        pixels = np.asarray(Image.open(page).convert("L"))
        inked = float((pixels < 200).mean())  # a header and footer alone ink about 0.3%
        assert (0.05 if number == 1 else 0.006) < inked < 0.5, (page.name, inked)
        assert pixels.shape[0] > pixels.shape[1], "portrait pages"
    keep = os.environ.get("DPSYNTH_STATEMENT_PAGES")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for page in [pdf, *pages]:
            shutil.copy(page, Path(keep) / page.name)


def test_cli_writes_the_statement_as_pdf_or_html(
    story: Story, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    common = ["--url", story.service.url, "--key", story.tokens["auditor"]]
    assert cli(["datasets", "statement", story.dataset_id, "-o", str(tmp_path / "s.pdf"), *common]) == 0
    assert cli(["datasets", "statement", story.dataset_id, "-o", str(tmp_path / "s.html"), *common]) == 0
    assert (tmp_path / "s.pdf").read_bytes().startswith(b"%PDF-")
    assert "<!doctype html>" in (tmp_path / "s.html").read_text(encoding="utf-8")
    assert "wrote" in capsys.readouterr().out
    analyst = ["--url", story.service.url, "--key", story.tokens["analyst"]]
    assert cli(["datasets", "statement", story.dataset_id, "-o", str(tmp_path / "no.pdf"), *analyst]) == 2
    assert "403" in capsys.readouterr().err and not (tmp_path / "no.pdf").exists()


def test_web_form_links_the_statement_and_serves_it_to_an_auditor(story: Story):
    # One user: each login costs a deliberately slow password hash. Custodians reach the same
    # route (LedgerReader), from the dataset page as well as the ledger page.
    with transaction(story.service.sessions) as session:
        tenant = session.get(Dataset, story.dataset_id).tenant_id  # type: ignore[union-attr]
        create_user(session, tenant_id=tenant, role=Role.auditor, name="statement-auditor", password=PASSWORD)
    link = f"/ui/datasets/{story.dataset_id}/statement"
    with _browser(story.service) as browser:
        assert _log_in(browser, "statement-auditor").status_code == 303
        assert f'href="{link}"' in browser.get(f"/ui/datasets/{story.dataset_id}/ledger").text
        response = browser.get(link)
        assert response.status_code == 200, response.text
        assert response.content.startswith(b"%PDF-")
        assert browser.get(f"/ui/datasets/{story.dataset_id}").status_code == 403  # the custodian's page
    template = Path(__file__).parents[2] / "service" / "web" / "templates" / "dataset.html"
    assert 'href="/ui/datasets/{{ dataset.id }}/statement"' in template.read_text(encoding="utf-8")
    with story.service.sessions() as session:
        last = session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).one()
    assert (last.action, last.actor[:5]) == ("statement.generated", "user:")


def test_timeline_keeps_the_newest_events_and_counts_the_rest(story: Story, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(statement, "TIMELINE_LIMIT", 4)
    with story.service.sessions() as session:
        dataset = session.get(Dataset, story.dataset_id)
        assert dataset is not None
        everything = statement.gather(session, dataset, head=None, generated_at=utcnow(), generated_by="me")
        monkeypatch.setattr(statement, "TIMELINE_LIMIT", 10_000)
        full = statement.gather(session, dataset, head=None, generated_at=utcnow(), generated_by="me")
    assert len(everything.timeline) == 4
    assert everything.timeline == full.timeline[-4:]
    assert everything.events_left_out == len(full.timeline) - 4 > 10
    assert [e.seq for e in full.timeline] == sorted(e.seq for e in full.timeline)
    page = render_html(document(everything))
    assert f"The {everything.events_left_out:,} oldest events are left out here" in page
