"""The web form's plumbing over real HTTP (no browser): sessions, CSRF, headers, redirects, escaping.

The pages themselves are driven by a real browser in tests/browser/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

from service.core.db import transaction
from service.core.orm import Role, User, utcnow
from service.core.security import create_user
from tests.integration.live import LiveService, live_service, service_settings

PASSWORD = "correct horse battery"


def _user(service: LiveService, name: str, role: Role = Role.custodian, tenant: str = "acme") -> str:
    with transaction(service.sessions) as session:
        return create_user(
            session, tenant_id=service.tenant(tenant), role=role, name=name, password=PASSWORD
        ).id


def _token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


def _browser(service: LiveService) -> httpx.Client:
    return httpx.Client(base_url=service.url, follow_redirects=False, timeout=60)


def _log_in(client: httpx.Client, name: str, password: str = PASSWORD, next: str = "") -> httpx.Response:
    token = _token(client.get("/ui/login").text)
    return client.post(
        "/ui/login", data={"name": name, "password": password, "csrf_token": token, "next": next}
    )


@pytest.fixture
def secure_service(tmp_path) -> Iterator[LiveService]:
    with live_service(service_settings(tmp_path / "secure", session_https_only=True)) as live:
        yield live


@pytest.fixture
def short_service(tmp_path) -> Iterator[LiveService]:
    with live_service(service_settings(tmp_path / "short", session_max_age=2)) as live:
        yield live


def test_pages_stay_out_of_the_openapi_and_the_root_opens_the_form(service: LiveService):
    with _browser(service) as client:
        paths = client.get("/openapi.json").json()["paths"]
        assert not [path for path in paths if path.startswith("/ui") or path == "/"]
        root = client.get("/")
        assert root.status_code == 307 and root.headers["location"] == "/ui/"
        assert client.get("/ui/").headers["location"] == "/ui/login?next=/ui/"


def test_pages_carry_strict_security_headers(service: LiveService):
    with _browser(service) as client:
        page = client.get("/ui/login")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"
        style = client.get("/ui/static/app.css")
        assert style.status_code == 200 and "cache-control" not in style.headers
        assert "content-security-policy" not in client.get("/health").headers  # the API is untouched


def test_session_cookie_is_http_only_lax_scoped_to_the_form(
    service: LiveService, secure_service: LiveService
):
    _user(service, "dana")
    with _browser(service) as client:
        cookie = _log_in(client, "dana").headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/ui" in cookie
        assert "secure" not in cookie
    with _browser(secure_service) as client:
        assert "secure" in client.get("/ui/login").headers["set-cookie"].lower()


def test_login_starts_a_fresh_session_and_never_redirects_off_site(service: LiveService):
    _user(service, "dana")
    with _browser(service) as client:
        before = _token(client.get("/ui/login").text)
        done = _log_in(client, "dana", next="//evil.example/ui/")
        assert done.status_code == 303 and done.headers["location"] == "/ui/"
        after = _token(client.get("/ui/datasets").text)
        assert after != before  # the pre-login token (and anything planted with it) is gone
        assert client.get("/ui/login?next=/ui/jobs").headers["location"] == "/ui/jobs"  # already in
    with _browser(service) as client:
        assert _log_in(client, "dana", next="/ui/releases").headers["location"] == "/ui/releases"


def test_the_session_does_not_authenticate_the_api_and_keys_do_not_open_pages(service: LiveService):
    _user(service, "dana")
    key = service.key(Role.custodian)
    with _browser(service) as client:
        _log_in(client, "dana")
        assert client.get("/ui/datasets").status_code == 200
        assert client.get("/datasets").status_code == 401  # cookies are not API credentials
    with httpx.Client(base_url=service.url, headers={"X-API-Key": key}, follow_redirects=False) as api:
        assert api.get("/ui/datasets").status_code == 303  # to the login page


def test_a_disabled_user_is_out_at_the_next_request(service: LiveService):
    user_id = _user(service, "dana")
    with _browser(service) as client:
        _log_in(client, "dana")
        assert client.get("/ui/datasets").status_code == 200
        with transaction(service.sessions) as session:
            session.get(User, user_id).disabled_at = utcnow()
        gone = client.get("/ui/datasets")
        assert gone.status_code == 303 and gone.headers["location"].startswith("/ui/login")
        assert _log_in(client, "dana").status_code == 401


def test_a_login_expires(short_service: LiveService):
    _user(short_service, "dana")
    with _browser(short_service) as client:
        _log_in(client, "dana")
        assert client.get("/ui/datasets").status_code == 200
        time.sleep(2.5)
        gone = client.get("/ui/datasets")
        assert gone.status_code == 303 and gone.headers["location"].startswith("/ui/login")


def test_data_shown_on_pages_is_escaped(service: LiveService):
    _user(service, "dana")
    key = service.key(Role.custodian)
    name = '<script>alert("x")</script>'
    with httpx.Client(base_url=service.url, headers={"X-API-Key": key}) as api:
        made = api.post(
            "/datasets",
            params={"name": name},
            content=b"<b>a</b>,b\n1,2\n3,4\n",
            headers={"Content-Type": "text/csv"},
        )
        assert made.status_code == 201, made.text
    with _browser(service) as client:
        _log_in(client, "dana")
        for path in ("/ui/datasets", f"/ui/datasets/{made.json()['id']}/schema"):
            html = client.get(path).text
            assert "<script>alert" not in html and "<b>a</b>" not in html
        assert "&lt;script&gt;alert" in client.get("/ui/datasets").text


def test_web_errors_are_pages_and_api_errors_stay_json(service: LiveService):
    _user(service, "dana")
    with _browser(service) as client:
        _log_in(client, "dana")
        page = client.get("/ui/no-such-page")
        assert page.status_code == 404 and "text/html" in page.headers["content-type"]
        assert "Not found" in page.text
        missing = client.get("/ui/datasets/" + "0" * 32)
        assert missing.status_code == 404 and "no dataset" in missing.text
        script = client.get("/ui/jobs/" + "0" * 32 + "/status", headers={"Accept": "application/json"})
        assert script.status_code == 404 and script.json()["detail"].startswith("no job")
        assert client.get("/no-such-api").json() == {"detail": "Not Found"}
