"""Who sees what in the browser: analysts, auditors, other tenants, bad passwords, forged posts."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sqlalchemy import select

from service.core.audit import AuditEvent
from service.core.audit_verify import verify_file
from service.core.db import make_engine, make_sessionmaker, transaction
from tests.browser.conftest import PASSWORD, ROWS, Stack, expect, log_in

RAW_FACTS = ("Input SHA-256", "Quality report", "training rows", "The raw upload", f"{ROWS} rows")


def _nav(page):
    return page.get_by_role("navigation", name="Main").get_by_role("link")


def test_wrong_password_shows_the_error_next_to_the_field_and_is_audited(page, stack: Stack, shot):
    page.goto("/ui/datasets")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/datasets$"))
    shot(page, "login")
    page.get_by_label("User name").fill(stack.users["custodian"])
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    error = page.locator("#password-error")
    expect(error).to_have_text(re.compile("The user name or password is not right"))
    expect(page.get_by_label("Password")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Password")).to_have_attribute("aria-describedby", "password-error")
    expect(page.get_by_label("User name")).to_have_value(stack.users["custodian"])
    shot(page, "login-error")
    # The same answer for a name that does not exist: nothing tells which part was wrong.
    page.get_by_label("User name").fill("nobody-here")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#password-error")).to_have_text(re.compile("The user name or password is not right"))

    engine = make_engine(f"sqlite:///{stack.data_dir / 'dpsynth.db'}")
    try:
        with transaction(make_sessionmaker(engine)) as session:
            failures = session.scalars(select(AuditEvent).where(AuditEvent.action == "auth.failure")).all()
    finally:
        engine.dispose()
    web = [json.loads(e.details) for e in failures if json.loads(e.details).get("via") == "web"]
    assert {d["known_user"] for d in web} == {True, False}
    assert all("not the password" not in e.details and "nobody-here" not in e.details for e in failures)

    # The right password goes where the user was heading.
    page.get_by_label("User name").fill(stack.users["custodian"])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile("/ui/datasets$"))


def test_analyst_sees_releases_and_certificates_only(page, stack: Stack, trained, shot):
    log_in(page, stack.users["analyst"])
    expect(page).to_have_url(re.compile("/ui/releases$"))
    expect(_nav(page)).to_have_text(["Releases"])
    expect(page.locator("header")).to_contain_text("analyst")
    expect(page.locator("table")).to_contain_text(trained["release_id"][:8])
    shot(page, "analyst-releases")

    page.goto(f"/ui/releases/{trained['release_id']}")
    expect(page.get_by_role("link", name="Download CSV")).to_be_visible()
    body = page.locator("main").inner_text()
    assert not [fact for fact in RAW_FACTS if fact in body], body
    expect(page.locator(".custodian-banner")).to_have_count(0)
    shot(page, "analyst-release")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    assert download.value.suggested_filename == f"release-{trained['release_id']}.csv"

    page.get_by_role("link", name="Read the certificate").click()
    expect(page.locator(".guarantee")).to_contain_text("differentially private")
    assert "Input SHA-256" not in page.locator("main").inner_text()
    expect(page.locator("main")).to_contain_text("not released")  # the row count
    shot(page, "analyst-certificate")
    certificate = json.loads(
        page.request.get(f"/ui/releases/{trained['release_id']}/certificate.json").text()
    )
    assert "input_sha256" not in certificate

    # Typed addresses: the upload page, raw data and the custodian's pages are refused on the server.
    response = page.goto("/ui/datasets/new")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text("Not allowed")
    expect(page.locator("main")).to_contain_text("this needs the role custodian; you are analyst")
    shot(page, "analyst-forbidden")
    for path in (
        "/ui/datasets",
        f"/ui/datasets/{trained['dataset_id']}",
        f"/ui/datasets/{trained['dataset_id']}/schema",
        f"/ui/datasets/{trained['dataset_id']}/jobs/new",
        f"/ui/jobs/{trained['job_id']}",
        f"/ui/datasets/{trained['dataset_id']}/ledger",
        "/ui/audit",
    ):
        assert page.request.get(path).status == 403, path
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    upload = page.request.post(
        "/ui/datasets/upload?name=x&filename=x.csv",
        data="a,b\n1,2\n",
        headers={"X-CSRF-Token": token, "Accept": "application/json"},
    )
    assert upload.status == 403 and "custodian" in upload.json()["detail"]


def test_auditor_reads_ledgers_and_exports_the_audit_log(page, stack: Stack, trained, shot, tmp_path: Path):
    log_in(page, stack.users["auditor"])
    expect(page).to_have_url(re.compile("/ui/ledgers$"))
    expect(_nav(page)).to_have_text(["Budget ledgers", "Audit log", "Evidence bundles"])
    expect(page.locator("table")).to_contain_text("visits")
    shot(page, "auditor-ledgers")
    page.get_by_role("link", name="visits").click()
    expect(page.locator("table")).to_contain_text("succeeded")
    assert "The raw upload" not in page.locator("main").inner_text()
    shot(page, "auditor-ledger")

    page.get_by_role("link", name="Audit log").click()
    expect(page.locator("table.events")).to_contain_text("job.succeeded")
    shot(page, "auditor-audit-log")
    exported = {}
    for name, suffix in (("Export as JSON Lines", "jsonl"), ("Export as CSV", "csv")):
        with page.expect_download() as download:
            page.get_by_role("link", name=name).click()
        path = tmp_path / f"audit.{suffix}"
        download.value.save_as(path)
        result = verify_file(path)
        assert result.ok, result.problems
        exported[suffix] = path
    actions = [json.loads(line)["action"] for line in exported["jsonl"].read_text().splitlines()]
    for action in ("auth.login", "dataset.upload", "job.succeeded", "release.created", "audit.export"):
        assert action in actions
    actors = {json.loads(line)["actor"] for line in exported["jsonl"].read_text().splitlines()}
    assert any(actor.startswith("user:") for actor in actors)

    # Auditors read evidence, not data.
    assert page.request.get(f"/ui/releases/{trained['release_id']}/download?format=csv").status == 403
    assert page.request.get("/ui/datasets/new").status == 403
    assert page.request.get(f"/ui/datasets/{trained['dataset_id']}/schema").status == 403


def test_a_post_without_the_csrf_token_is_refused(page, stack: Stack, trained):
    log_in(page, stack.users["custodian"])
    dataset = trained["dataset_id"]
    for data in ({"epsilon": "9"}, {"epsilon": "9", "csrf_token": "forged"}):
        response = page.request.post(f"/ui/datasets/{dataset}/budget", form=data)
        assert response.status == 403, data
        assert "security token" in response.text()
    for path in (f"/ui/datasets/{dataset}/erase", "/ui/logout", f"/ui/jobs/{trained['job_id']}/cancel"):
        assert page.request.post(path, form={"confirm": "yes"}).status == 403, path
    upload = page.request.post(
        "/ui/datasets/upload?name=x&filename=x.csv", data="a,b\n1,2\n", headers={"Accept": "application/json"}
    )
    assert upload.status == 403
    page.goto(f"/ui/datasets/{dataset}")
    expect(page.locator(".danger-zone")).not_to_contain_text("was erased")  # nothing happened
    expect(page.locator(".budget-facts")).to_contain_text("ε 2")


def test_another_tenants_objects_are_not_found(page, stack: Stack, trained, shot):
    log_in(page, stack.users["globex"])
    expect(page.locator("header")).to_contain_text("globex")
    expect(page.locator("main")).to_contain_text("No datasets yet")
    for path in (
        f"/ui/datasets/{trained['dataset_id']}",
        f"/ui/datasets/{trained['dataset_id']}/schema",
        f"/ui/datasets/{trained['dataset_id']}/ledger",
        f"/ui/jobs/{trained['job_id']}",
        f"/ui/jobs/{trained['job_id']}/status",
        f"/ui/releases/{trained['release_id']}",
        f"/ui/releases/{trained['release_id']}/certificate",
        f"/ui/releases/{trained['release_id']}/certificate.json",
        f"/ui/releases/{trained['release_id']}/download?format=csv",
    ):
        assert page.request.get(path).status == 404, path
    response = page.goto(f"/ui/releases/{trained['release_id']}")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    shot(page, "other-tenant-not-found")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    cancel = page.request.post(f"/ui/jobs/{trained['job_id']}/cancel", form={"csrf_token": token})
    assert cancel.status == 404
