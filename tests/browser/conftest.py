"""A real ``dpsynth serve`` (API + embedded worker) driven by headless Chromium through Playwright.

The browser is the Debian ``chromium`` package (Playwright's own builds cannot be
downloaded here); ``scripts/system-packages.sh`` installs it. Without it, or without the
``playwright`` package, the tests skip, unless DPSYNTH_REQUIRE_SERVERS is set (CI), in
which case they fail. Users are made with ``dpsynth admin create-user``, as an operator
would. Every page a test visits is saved as a screenshot in ``tests/browser/screenshots/``
(or ``$DPSYNTH_SCREENSHOTS``) for people to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_table
from tests.integration.processes import Server, cli, service_env, wait_for
from tests.integration.servers import unavailable

try:
    from playwright.sync_api import expect
except ImportError:  # the stack fixture skips (or, in CI, fails) and says why
    expect = None

SCREENSHOTS = Path(os.environ.get("DPSYNTH_SCREENSHOTS") or Path(__file__).parent / "screenshots")
VIEWPORT = {"width": 1366, "height": 768}  # a common laptop screen
PASSWORD = "correct horse battery staple"
ROWS = 400


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if shutil.which("chromium") is None:
        return "the Debian chromium package is not installed"
    return None


@dataclass
class Stack:
    """The running service and its tenants' users."""

    url: str
    env: dict[str, str]
    data_dir: Path
    users: dict[str, str] = field(default_factory=dict)  # role (or "globex") -> user name


def _create_users(env: dict[str, str], users: list[tuple[str, str, str]]) -> None:
    """``dpsynth admin create-user`` for each (tenant, role, name), password on stdin, side by side."""
    running = []
    for tenant, role, name in users:
        args = [
            "admin",
            "create-user",
            "--tenant",
            tenant,
            "--role",
            role,
            "--name",
            name,
            "--password-stdin",
        ]
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        running.append(process)
    for process in running:
        out, err = process.communicate(PASSWORD + "\n", timeout=120)
        assert process.returncode == 0, err


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``dpsynth serve`` on a temp data dir with tenants acme and globex and their users."""
    unavailable(chromium_missing())
    root = tmp_path_factory.mktemp("browser")
    env = service_env(root / "data")
    for tenant in ("acme", "globex"):
        cli(env, "admin", "create-tenant", tenant)
    users = {"custodian": "dana", "analyst": "sam", "auditor": "ari", "globex": "gil"}
    _create_users(
        env, [("acme", role, users[role]) for role in ("custodian", "analyst", "auditor")]
        + [("globex", "custodian", users["globex"])],
    )  # fmt: skip
    server = Server(env, log=root / "serve.log")
    try:
        yield Stack(url=server.url, env=env, data_dir=root / "data", users=users)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def trained(stack: Stack) -> dict[str, str]:
    """A dataset of acme trained through the API (so tests of other roles need no browser flow)."""
    key = cli(stack.env, "admin", "create-key", "--tenant", "acme", "--role", "custodian").stdout.strip()
    with httpx.Client(base_url=stack.url, headers={"X-API-Key": key}, timeout=60) as api:
        body = make_table(ROWS, seed=5).to_csv(index=False).encode()
        dataset = api.post(
            "/datasets", params={"name": "visits"}, content=body, headers={"Content-Type": "text/csv"}
        )
        assert dataset.status_code == 201, dataset.text
        dataset_id = dataset.json()["id"]
        assert api.put(f"/datasets/{dataset_id}/budget", json={"epsilon": 2}).status_code == 200
        job = api.post(
            "/jobs", json={"dataset_id": dataset_id, "epsilon": 1, "rows": 200, "generator_steps": 150}
        )
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]

        def done() -> dict | None:
            state = api.get(f"/jobs/{job_id}").json()
            return state if state["state"] in ("succeeded", "failed", "cancelled") else None

        final = wait_for(done, timeout=240, what=f"job {job_id}", every=0.5)
    assert final["state"] == "succeeded", final
    return {"dataset_id": dataset_id, "job_id": job_id, "release_id": final["release_id"]}


@pytest.fixture(scope="session")
def browser(stack: Stack) -> Iterator[Any]:
    """Headless Debian chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    """A fresh browser context (no cookies) at laptop size, downloads allowed."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True, base_url=stack.url)
    context.set_default_timeout(20_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and "status of 4" not in msg.text
            else None
        ),
    )
    yield page
    context.close()
    assert problems == [], problems


@pytest.fixture(scope="session")
def shot() -> Callable[[Any, str], Path]:
    """Save a full-page screenshot named ``NN-name.png`` in the order taken."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1, 1000))

    def take(page: Any, name: str) -> Path:
        page.wait_for_load_state("load")
        path = SCREENSHOTS / f"{next(counter):02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def log_in(page: Any, name: str, password: str = PASSWORD) -> None:
    """Log in through the form and wait for the first page."""
    page.goto("/ui/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/ui/login" not in url)
