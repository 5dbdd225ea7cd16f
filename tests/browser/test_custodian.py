"""A custodian's whole day in the browser: log in, upload, review the schema, train, download."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd

from tests.browser.conftest import ROWS, Stack, expect, log_in
from tests.conftest import make_table

COLUMNS = ["age", "income", "smoker", "region", "children", "outcome"]
STEPS = "200"  # the generator fit; then a DP-GAN phase of a few seconds, long enough to watch


def _row(page, column: str):
    return page.locator("tr[data-row]", has=page.locator("span.colname", has_text=re.compile(f"^{column}$")))


def test_custodian_uploads_reviews_trains_and_downloads(page, stack: Stack, shot, tmp_path: Path):
    log_in(page, stack.users["custodian"])
    expect(page).to_have_url(re.compile("/ui/datasets$"))
    header = page.locator("header")
    expect(header).to_contain_text("dana")
    expect(header).to_contain_text("acme")
    expect(header).to_contain_text("custodian")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link")).to_have_text(
        ["Datasets", "Jobs", "Releases", "Budget ledgers"]
    )
    shot(page, "custodian-datasets")

    # A rejected file: the server's reason appears next to the file field, nothing is kept.
    page.get_by_role("link", name="Upload a table").first.click()
    bad = tmp_path / "twice.csv"
    bad.write_text("a,a\n1,2\n")
    page.get_by_label("Table file").set_input_files(str(bad))
    page.get_by_role("button", name="Upload").click()
    error = page.locator("#file-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("duplicate column names ['a']")
    expect(page.get_by_label("Table file")).to_have_attribute("aria-invalid", "true")
    shot(page, "upload-rejected")

    # A good file, with the progress bar shown while it streams (throttled so it can be seen).
    table = tmp_path / "patients.csv"
    make_table(ROWS, seed=3).to_csv(table, index=False)
    page.get_by_label("Table file").set_input_files(str(table))
    expect(page.get_by_label("Name", exact=True)).to_have_value("twice")  # taken from the first file
    page.get_by_label("Name", exact=True).fill("patients")
    page.get_by_label("Total privacy budget (ε)").fill("3")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 8_000},
    )
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-progress")).to_be_visible()
    expect(page.locator("#file-error")).to_be_hidden()
    page.wait_for_function("() => document.getElementById('upload-bar').value > 0")
    expect(page.locator("#upload-status")).to_contain_text(re.compile("Uploading… [1-9]|Checking"))
    shot(page, "upload-progress")
    page.wait_for_url(re.compile(r"/ui/datasets/[0-9a-f]{32}/schema$"), timeout=60_000)
    cdp.detach()
    dataset_id = page.url.split("/")[-2]
    expect(page.locator(".notice")).to_contain_text(f"Uploaded 'patients': {ROWS} rows")

    # Schema review: kinds as inferred, the budget split before anything runs.
    for column in COLUMNS:
        expect(_row(page, column)).to_have_count(1)
    expect(_row(page, "income").get_by_label("Kind of income")).to_have_value("continuous")
    expect(_row(page, "region").get_by_label("Kind of region")).to_have_value("categorical")
    plan = page.locator("#plan-title").locator("xpath=..")
    expect(plan).to_contain_text("Domain discovery")
    expect(plan).to_contain_text("2-way marginals")
    left = page.locator("#left-title").locator("xpath=..")
    expect(left).to_contain_text("ε 3")
    shot(page, "schema-review")
    discovery_before = _row(page, "age").locator("td.num").inner_text()

    # A mistake is shown next to the column that caused it, and nothing is saved.
    age = _row(page, "age")
    age.get_by_label("Public:").check()
    age.get_by_label("Lowest possible value of age").fill("90")
    age.get_by_label("Highest possible value of age").fill("18")
    page.get_by_role("button", name="Save schema").click()
    age = _row(page, "age")
    expect(age.locator(".field-error")).to_have_text(re.compile("lowest value must be below the highest"))
    expect(age.get_by_label("Lowest possible value of age")).to_have_attribute("aria-invalid", "true")
    shot(page, "schema-error")

    age.get_by_label("Lowest possible value of age").fill("18")
    age.get_by_label("Highest possible value of age").fill("90")
    age.get_by_label("Missing values in age").select_option("no")
    region = _row(page, "region")
    region.get_by_label("Public:").check()
    region.get_by_label("Every possible category of region, one per line").fill("north\nsouth\neast\nwest")
    region.get_by_label("Missing values in region").select_option("no")
    outcome = _row(page, "outcome")
    outcome.get_by_label("Public:").check()
    outcome.get_by_label("Every possible category of outcome, one per line").fill("no\nyes")
    page.get_by_label("Target column").select_option("outcome")
    page.get_by_role("button", name="Save schema").click()
    expect(page.locator(".notice")).to_contain_text("The schema is saved")
    expect(_row(page, "age").get_by_label("Lowest possible value of age")).to_have_value("18")
    expect(_row(page, "region").locator("td.num")).to_have_text("—")  # public categories: no discovery
    assert _row(page, "age").locator("td.num").inner_text() != discovery_before  # no bounds step now
    shot(page, "schema-saved")

    # New job: over budget first (the error sits next to epsilon), then a real one.
    page.get_by_role("link", name="Next: new job").click()
    expect(page.locator("#epsilon-help")).to_contain_text("Smaller ε = stronger privacy")
    expect(page.locator("#epsilon-help")).to_contain_text("ε 3 left")
    shot(page, "job-new")
    page.get_by_label("Privacy budget for this release (ε, epsilon)").fill("5")
    page.get_by_role("button", name="Start the job").click()
    expect(page.locator("#epsilon-error")).to_contain_text("the dataset has only epsilon 3")
    shot(page, "job-over-budget")
    page.get_by_label("Privacy budget for this release (ε, epsilon)").fill("1")
    page.get_by_label("Synthetic rows").fill("300")
    page.get_by_text("Advanced settings").click()
    page.get_by_label("Generator steps").fill(STEPS)
    page.get_by_label("DP-GAN phase: share of ε for the discriminator").fill("0.3")
    page.get_by_label("Discriminator epochs").fill("60")
    page.get_by_role("button", name="Start the job").click()
    page.wait_for_url(re.compile(r"/ui/jobs/[0-9a-f]{32}$"))
    job_id = page.url.split("/")[-1]
    expect(page.get_by_role("button", name="Cancel job")).to_be_visible()
    # Live progress: the page polls the job; catch the bar on its way, then wait for 100%.
    bar = page.locator("#job-bar")
    page.wait_for_function(
        "() => { const b = document.getElementById('job-bar');"
        " return !!document.getElementById('release-link') || (!!b && b.value > 0 && b.value < 100); }",
        timeout=60_000,
    )
    seen = [float(bar.get_attribute("value") or 0)]
    shot(page, "job-progress")

    # The page reloads once the job has ended.
    for _ in range(600):
        if page.locator("#release-link").count():
            break
        value = bar.get_attribute("value")
        if value is not None:
            seen.append(float(value))
        page.wait_for_timeout(250)
    expect(page.locator("#job-state")).to_have_text("succeeded")
    expect(page.locator("#job-percent")).to_have_text("100%")
    assert float(bar.get_attribute("value")) == 100.0
    assert seen == sorted(seen)  # progress only moves forwards
    assert [v for v in seen if 0 < v < 100], seen  # and was seen on its way, not only at the end
    expect(page.locator(".progress-text")).to_contain_text("ε spent so far")
    epoch = float(page.locator("#job-epoch").inner_text())
    assert epoch > 1  # the DP-SGD discriminator's passes over the data
    shot(page, "job-done")
    page.get_by_label("Draw more rows from the same model (no budget)").fill("0")
    page.get_by_role("button", name="Draw rows").click()
    expect(page.locator("#more-rows-error")).to_contain_text("a whole number from 1")

    # The release: downloads, certificate, and the custodian-only quality report with pictures.
    page.get_by_role("link", name="Open the release").click()
    release_id = page.url.split("/")[-1]
    expect(page.locator(".custodian-banner")).to_contain_text("Custodians only")
    expect(page.locator(".chart-grid figure")).to_have_count(len(COLUMNS))
    expect(page.locator(".heatmaps svg")).to_have_count(2)
    expect(page.locator("#util-title").locator("xpath=..")).to_contain_text("AUC, trained on synthetic")
    expect(page.locator("#priv-title").locator("xpath=..")).to_contain_text("Membership attack AUC")
    shot(page, "release-custodian")

    with page.expect_download() as csv_download:
        page.get_by_role("link", name="Download CSV").click()
    csv_path = tmp_path / "release.csv"
    csv_download.value.save_as(csv_path)
    released = pd.read_csv(csv_path)
    assert len(released) == 300
    assert list(released.columns) == COLUMNS
    assert released["age"].between(18, 90).all()
    assert set(released["region"]) <= {"north", "south", "east", "west"}
    with page.expect_download() as parquet_download:
        page.get_by_role("link", name="Download Parquet").click()
    parquet_path = tmp_path / "release.parquet"
    parquet_download.value.save_as(parquet_path)
    assert len(pd.read_parquet(parquet_path)) == 300

    page.get_by_role("link", name="Read the certificate").click()
    expect(page.locator(".guarantee")).to_contain_text("differentially private")
    expect(page.get_by_text("Input SHA-256")).to_be_visible()  # the custodian sees the raw hash
    audit = page.locator("section", has=page.get_by_role("heading", name="Empirical privacy audit"))
    expect(audit).to_contain_text("consistent with the claim")
    expect(audit.locator("table")).to_contain_text("measured marginals")
    shot(page, "certificate")
    certificate = json.loads(page.request.get(f"/ui/releases/{release_id}/certificate.json").text())
    assert 0 < certificate["epsilon"] <= 1.0 and certificate["service"]["job_id"] == job_id

    page.goto(f"/ui/datasets/{dataset_id}/ledger")
    expect(page.locator("table")).to_contain_text(job_id[:8])
    expect(page.locator("table")).to_contain_text("succeeded")
    shot(page, "ledger-custodian")

    page.goto("/ui/releases")
    expect(page.locator("table")).to_contain_text(release_id[:8])
    page.goto("/ui/jobs")
    expect(page.locator("table")).to_contain_text(job_id[:8])
    shot(page, "jobs")

    # Erase the raw data: an explicit confirmation, then the release stays downloadable.
    page.goto(f"/ui/datasets/{dataset_id}")
    shot(page, "dataset")
    page.get_by_role("button", name="Erase raw data").click()
    expect(page.locator("#confirm-error")).to_contain_text("tick the box")
    page.get_by_label(re.compile("I understand")).check()
    page.get_by_role("button", name="Erase raw data").click()
    expect(page.locator(".notice")).to_contain_text("is erased")
    expect(page.locator(".danger-zone")).to_contain_text("was erased on")
    still = page.request.get(f"/ui/releases/{release_id}/download?format=csv")
    assert still.status == 200 and len(pd.read_csv(io.BytesIO(still.body()))) == 300
    page.goto("/ui/datasets")
    row = page.locator("tbody tr", has=page.get_by_role("link", name="patients"))
    expect(row).to_contain_text("erased")
    expect(row).to_contain_text(f"{ROWS}")
    shot(page, "datasets-list")
    page.goto("/ui/ledgers")
    expect(page.locator("table")).to_contain_text("patients")
    shot(page, "ledgers-custodian")
