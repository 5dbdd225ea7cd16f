"""The budget statement's words, document and renderers, without a server.

``tests/integration/test_statement.py`` gathers a statement from a live service and looks at
the rendered pages; these tests pin the wording rules and the edge cases.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.core.ledger import Budget
from service.core.orm import Job, JobState
from service.core.statement import (
    ChainHead,
    EmpiricalAudit,
    Event,
    JobFact,
    ReleaseFact,
    Statement,
    mechanism_groups,
)
from service.core.statement_document import Paragraph, Table, document
from service.core.statement_render import find_fonts, render_html, render_pdf
from service.core.statement_words import charge_reason, delta_text, describe, eps_text, factor, one_in

T0 = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
MECHANISMS = [
    {
        "name": "domain:age:bounds",
        "type": "gaussian",
        "noise_multiplier": 20.0,
        "steps": 1,
        "epsilon_share": 0.1,
    },
    {
        "name": "domain:age:cells",
        "type": "gaussian",
        "noise_multiplier": 10.0,
        "steps": 1,
        "epsilon_share": 0.2,
    },
    {"name": "marginal:age", "type": "gaussian", "noise_multiplier": 25.0, "steps": 1, "epsilon_share": 0.1},
    {
        "name": "marginal:age,sex",
        "type": "gaussian",
        "noise_multiplier": 25.0,
        "steps": 1,
        "epsilon_share": 0.3,
    },
    {
        "name": "dp-sgd:discriminator",
        "type": "poisson_subsampled_gaussian",
        "noise_multiplier": 1.1,
        "steps": 1200,
        "epsilon_share": 0.3,
    },
]
AUDIT = EmpiricalAudit(
    method="one-run",
    epsilon_lower_bound=0.31,
    confidence=0.95,
    canaries=1000,
    guesses=100,
    correct=70,
    base="",
)


def _statement(**changes: object) -> Statement:
    job = JobFact(
        label="J1",
        job_id="a" * 32,
        state="succeeded",
        created_at=T0,
        finished_at=T0 + timedelta(minutes=3),
        epsilon_reserved=1.0,
        delta_reserved=1e-6,
        epsilon_charged=0.9,
        delta_charged=1e-6,
        release_labels=("R1", "R2"),
        why="finished: charged what its certificate spent",
    )
    release = ReleaseFact(
        label="R1",
        release_id="b" * 32,
        job_label="J1",
        job_id=job.job_id,
        created_at=T0 + timedelta(minutes=3),
        rows=1000,
        state="ready",
        epsilon=0.9,
        delta=1e-6,
        accountant="PRV (privacy loss random variables)",
        neighbouring_relation="add or remove one row",
        mechanisms=mechanism_groups(MECHANISMS),
        empirical_audit=AUDIT,
        repeat=False,
    )
    again = replace(release, label="R2", release_id="c" * 32, rows=5, empirical_audit=None, repeat=True)
    facts = {
        "dataset_id": "d" * 32,
        "dataset_name": "patients",
        "tenant_name": "acme",
        "dataset_created_at": T0,
        "raw_erased_at": None,
        "generated_at": T0 + timedelta(days=1),
        "generated_by": "bob (auditor)",
        "budget": Budget(
            epsilon_total=3.0,
            delta_total=1e-5,
            epsilon_charged=0.9,
            delta_charged=1e-6,
            epsilon_reserved=0.0,
            delta_reserved=0.0,
        ),
        "releases": (release, again),
        "jobs": (job,),
        "timeline": (
            Event(
                seq=7,
                at=T0,
                actor="alice (custodian)",
                actor_id="user:x",
                action="job.queued",
                what="submitted J1",
            ),
        ),
        "events_left_out": 0,
        "head": ChainHead(seq=9, hash="e" * 64, tenant_seq=4, tenant_hash="f" * 64),
        "actors": (("alice (custodian)", "user:x"),),
    }
    return Statement(**{**facts, **changes})  # type: ignore[arg-type]


def test_numbers_read_plainly():
    assert [eps_text(v) for v in (3.0, 0.998813, 0.2, 0, 12345.6, None)] == [
        "3",
        "0.9988",
        "0.2",
        "0",
        "12,346",
        "—",
    ]
    assert [delta_text(v) for v in (1e-5, 2.5e-7, 3e-6, 0, None)] == [
        "1 × 10⁻⁵",
        "2.5 × 10⁻⁷",
        "3 × 10⁻⁶",
        "0",
        "—",
    ]
    assert one_in(1e-6) == "one in 1,000,000"
    assert one_in(3e-6) == "about one in 333,333"
    assert (factor(1.0), factor(0.5), factor(100.0)) == ("2.72", "1.65", "more than a million")


def _job(
    state: JobState, *, started: bool = True, charged: float | None = None, error: str | None = None
) -> Job:
    return Job(
        state=state,
        epsilon=0.5,
        delta=1e-6,
        epsilon_charged=charged,
        delta_charged=None if charged is None else (1e-6 if charged else 0.0),
        started_at=T0 if started else None,
        error=error,
    )


def test_charge_reason_says_how_each_charge_came_about():
    reasons = [
        charge_reason(job)
        for job in (
            _job(JobState.succeeded, charged=0.49),
            _job(JobState.running),
            _job(JobState.cancelled, started=False, charged=0.0),
            _job(JobState.cancelled, charged=0.2, error="cancelled by request"),
            _job(JobState.cancelled, charged=0.5),
            _job(JobState.failed, charged=0.0, error="bad schema"),
            _job(JobState.failed, charged=0.5, error="x" * 500),
        )
    ]
    assert reasons[0] == "finished: charged what its certificate spent"
    assert reasons[1] == "running: its reservation is held until it ends"
    assert reasons[2] == "cancelled before it started: charged nothing"
    assert reasons[3] == "cancelled while training: charged what it had spent when it stopped"
    assert reasons[4].startswith("cancelled while back in the queue after an interrupted attempt")
    assert reasons[5] == "refused before any privacy mechanism ran: charged nothing (bad schema)"
    assert reasons[6].startswith("failed: charged its whole reservation")
    assert len(reasons[6]) < 320 and reasons[6].endswith("…)"), "long errors are cut"


def test_events_are_described_with_labels_and_unknown_actions_as_logged():
    jobs, releases = {"j" * 32: "J1"}, {"r" * 32: "R1"}
    assert describe("job.queued", "j" * 32, {"epsilon": 1.0, "delta": 1e-6}, jobs, releases) == (
        "submitted J1, reserving ε 1, δ 1 × 10⁻⁶"
    )
    assert (
        describe("job.queued", "j" * 32, {"reason": "lost"}, jobs, releases)
        == "put J1 back in the queue (lost)"
    )
    assert describe(
        "job.cancelled", "j" * 32, {"error": "cancelled by request", "epsilon_charged": 0.2}, jobs, {}
    ) == ("J1 cancelled; charged ε 0.2")
    assert describe("release.created", "r" * 32, {"job_id": "j" * 32, "rows": 1000}, jobs, releases) == (
        "released R1 from J1: 1,000 rows"
    )
    assert describe("batch.queued", "b", {"jobs": ["j" * 32, "other"]}, jobs, releases) == (
        "submitted a batch including J1"
    )
    assert describe("bundle.exported", "d", {}, jobs, releases) == "bundle.exported the dataset"


def test_mechanisms_are_grouped_by_kind_with_their_shares():
    groups = {g.name: g for g in mechanism_groups(MECHANISMS)}
    assert list(groups) == ["Domain discovery", "1-way marginals", "2-way marginals", "DP-SGD training"]
    assert (groups["Domain discovery"].count, groups["Domain discovery"].noise_min) == (2, 10.0)
    assert groups["Domain discovery"].share == pytest.approx(0.3)
    assert groups["DP-SGD training"].kinds == ("subsampled Gaussian",)
    assert groups["DP-SGD training"].steps == 1200


def _text(doc_blocks: object) -> str:
    return render_html(document(doc_blocks))  # type: ignore[arg-type]


def test_statement_says_the_figures_and_the_audit_and_what_is_not_audited():
    html = _text(_statement())
    for fact in ("3", "1 × 10⁻⁵", "0.9", "2.1", "9 × 10⁻⁶", "≥ 0.31 (95% conf.)", "R2 *", "e" * 64, "f" * 64):
        assert fact in html, fact
    no_audit = _text(
        _statement(releases=tuple(replace(r, empirical_audit=None) for r in _statement().releases))
    )
    assert "not audited" in no_audit and "≥ 0.31" not in no_audit


def test_statement_without_a_budget_or_jobs_says_so():
    empty = _statement(
        budget=Budget(
            epsilon_total=None,
            delta_total=None,
            epsilon_charged=0.0,
            delta_charged=0.0,
            epsilon_reserved=0.0,
            delta_reserved=0.0,
        ),
        releases=(),
        jobs=(),
        timeline=(),
        head=None,
    )
    doc = document(empty)
    html = render_html(doc)
    for said in (
        "No total budget has been set",
        "No table has been released from this dataset.",
        "No job has been submitted on this dataset.",
        "So far no job has been charged anything.",
        "Nothing has been spent",
    ):
        assert said in html, said
    assert "What remains." not in html
    paragraphs = [b for s in doc.sections for b in s.blocks if isinstance(b, Paragraph)]
    tables = [b for s in doc.sections for b in s.blocks if isinstance(b, Table)]
    assert paragraphs and tables


def test_html_escapes_what_users_named():
    html = _text(_statement(dataset_name='<script>alert("x")</script>', tenant_name="a&b"))
    assert "<script>" not in html and "&lt;script&gt;" in html and "a&amp;b" in html


def test_pdf_lists_the_facts_with_or_without_the_dejavu_fonts(tmp_path: Path):
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    doc = document(_statement(dataset_name="Hôpital — naïve ≥ 18 ✓"))
    for name, pdf in (("core", render_pdf(doc, use_system_fonts=False)), ("dejavu", render_pdf(doc))):
        path = tmp_path / f"{name}.pdf"
        path.write_bytes(pdf)
        text = subprocess.run(
            ["pdftotext", "-raw", str(path), "-"], capture_output=True, text=True, check=True
        ).stdout
        assert "page 1 of" in text and "add or remove one row" in text and "Hôpital" in text
        if name == "core" or find_fonts() is None:
            assert "epsilon (epsilon)" in text and "1 x 10^-5" in text and "naïve >= 18 ?" in text
        else:
            assert "epsilon (ε)" in text and "1 × 10⁻⁵" in text and "naïve ≥ 18 ✓" in text
