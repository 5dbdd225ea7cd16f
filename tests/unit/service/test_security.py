"""Web users: scrypt password hashes, logins that cost the same whether or not the name exists."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.core import security
from service.core.db import Base, make_engine, make_sessionmaker, transaction
from service.core.errors import AuthenticationError, InvalidRequestError
from service.core.orm import Role, User, utcnow
from service.core.security import (
    authenticate_password,
    check_password,
    create_tenant,
    create_user,
    find_login,
    hash_password,
    password_matches,
)

PASSWORD = "correct horse battery"


@pytest.fixture
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests hash many passwords; the real cost (N=2^17) is checked once below."""
    monkeypatch.setattr(security, "SCRYPT_N", 2**10)
    monkeypatch.setattr(security, "_DUMMY_HASH", security._DUMMY_HASH.replace("$131072$", "$1024$"))


@pytest.fixture
def sessions(tmp_path, cheap_scrypt) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    Base.metadata.create_all(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def tenant_id(sessions: sessionmaker[Session]) -> str:
    with transaction(sessions) as session:
        return create_tenant(session, "acme").id


def test_hash_password_stores_scheme_cost_and_a_fresh_salt():
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    scheme, n, r, p, salt, digest = first.split("$")
    assert (scheme, n, r, p) == ("scrypt", "131072", "8", "1")
    assert first != second  # a new salt each time
    assert first.split("$")[4] != second.split("$")[4]
    assert password_matches(PASSWORD, first) and password_matches(PASSWORD, second)
    assert not password_matches(PASSWORD + "!", first)
    assert PASSWORD not in first


def test_a_hash_made_with_other_costs_still_verifies(cheap_scrypt):
    old = hash_password(PASSWORD)  # N=2^10 here; verification reads the cost from the hash
    assert old.split("$")[1] == "1024"
    assert password_matches(PASSWORD, old)


@pytest.mark.parametrize("stored", ["", "bcrypt$x", "scrypt$1024$8$1$!!$!!", "scrypt$notanumber$8$1$AA$AA"])
def test_malformed_hashes_never_match(stored):
    assert not password_matches(PASSWORD, stored)


def test_create_user_then_log_in(sessions, tenant_id):
    with transaction(sessions) as session:
        user = create_user(
            session, tenant_id=tenant_id, role=Role.custodian, name=" dana ", password=PASSWORD
        )
    assert user.name == "dana"
    assert user.password_hash.startswith("scrypt$") and PASSWORD not in user.password_hash
    with transaction(sessions) as session:
        assert authenticate_password(session, "dana", PASSWORD).id == user.id


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("dana", "short", "at least 12 characters, got 5"),
        ("dana", "x" * 1025, "at most 1024 characters"),
        ("", PASSWORD, "a user name needs 1 to 200 characters"),
        ("bad\nname", PASSWORD, "no control characters"),
        ("n" * 201, PASSWORD, "1 to 200 characters"),
    ],
)
def test_create_user_refuses_bad_names_and_passwords(sessions, tenant_id, name, password, message):
    with transaction(sessions) as session, pytest.raises(InvalidRequestError, match=message):
        create_user(session, tenant_id=tenant_id, role=Role.analyst, name=name, password=password)


def test_user_names_are_unique_across_tenants(sessions, tenant_id):
    with transaction(sessions) as session:
        create_user(session, tenant_id=tenant_id, role=Role.analyst, name="sam", password=PASSWORD)
        other = create_tenant(session, "globex").id
    with transaction(sessions) as session, pytest.raises(InvalidRequestError, match="'sam' already exists"):
        create_user(session, tenant_id=other, role=Role.auditor, name="sam", password=PASSWORD)


def test_wrong_password_unknown_name_and_disabled_user_fail_alike(sessions, tenant_id):
    with transaction(sessions) as session:
        create_user(session, tenant_id=tenant_id, role=Role.custodian, name="dana", password=PASSWORD)
        gone = create_user(session, tenant_id=tenant_id, role=Role.custodian, name="gone", password=PASSWORD)
        gone.disabled_at = utcnow()
    messages = set()
    for name, password in [("dana", "wrong password!"), ("nobody", PASSWORD), ("gone", PASSWORD), ("", "")]:
        with transaction(sessions) as session, pytest.raises(AuthenticationError) as caught:
            authenticate_password(session, name, password)
        messages.add(str(caught.value))
    assert messages == {"the user name or password is not right"}


def test_an_unknown_name_costs_one_scrypt_like_a_known_one(sessions, tenant_id, monkeypatch):
    with transaction(sessions) as session:
        create_user(session, tenant_id=tenant_id, role=Role.custodian, name="dana", password=PASSWORD)
    calls: list[tuple[int, int, int]] = []
    real = security._scrypt

    def counting(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
        calls.append((n, r, p))
        return real(password, salt, n, r, p)

    monkeypatch.setattr(security, "_scrypt", counting)
    for name in ("dana", "nobody"):
        with transaction(sessions) as session:
            candidate = find_login(session, name)
        with pytest.raises(AuthenticationError):
            check_password(candidate, "not the password")
    assert calls == [(2**10, 8, 1), (2**10, 8, 1)]


def test_find_login_reads_the_row_and_check_password_needs_no_session(sessions, tenant_id):
    with transaction(sessions) as session:
        user = create_user(session, tenant_id=tenant_id, role=Role.auditor, name="ari", password=PASSWORD)
        candidate = find_login(session, "ari")
    assert (candidate.user_id, candidate.tenant_id, candidate.active) == (user.id, tenant_id, True)
    assert check_password(candidate, PASSWORD) == user.id
    with transaction(sessions) as session:
        assert session.get(User, user.id) is not None


def test_cli_create_user_reads_the_password_from_stdin_or_generates_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPSYNTH_")}
    env["DPSYNTH_DATA_DIR"] = str(tmp_path)
    run = [sys.executable, "-m", "service.cli", "admin"]
    subprocess.run([*run, "create-tenant", "acme"], env=env, check=True, capture_output=True)
    typed = subprocess.run(
        [
            *run,
            "create-user",
            "--tenant",
            "acme",
            "--role",
            "custodian",
            "--name",
            "dana",
            "--password-stdin",
        ],
        env=env,
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    assert "created custodian 'dana' in tenant 'acme'" in typed.stdout
    assert "password" not in typed.stdout
    made = subprocess.run(
        [
            *run,
            "create-user",
            "--tenant",
            "acme",
            "--role",
            "analyst",
            "--name",
            "sam",
            "--generate-password",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    generated = made.stdout.split("password (shown once): ")[1].strip()
    short = subprocess.run(
        [*run, "create-user", "--tenant", "acme", "--role", "analyst", "--name", "x", "--password-stdin"],
        env=env,
        input="short\n",
        capture_output=True,
        text=True,
    )
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    engine = make_engine(f"sqlite:///{tmp_path / 'dpsynth.db'}")
    try:
        with transaction(make_sessionmaker(engine)) as session:
            assert authenticate_password(session, "dana", PASSWORD).role is Role.custodian
            assert authenticate_password(session, "sam", generated).role is Role.analyst
    finally:
        engine.dispose()


def test_bootstrap_makes_a_key_and_a_web_login_per_role(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPSYNTH_")}
    env["DPSYNTH_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "admin", "bootstrap"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    kept = (tmp_path / "bootstrap-keys.txt").read_text()
    logins = dict(
        line.split(" web login ")[1].split(", password ") for line in kept.splitlines() if "web login" in line
    )
    assert set(logins) == {f"'{role.value}'" for role in Role}
    engine = make_engine(f"sqlite:///{tmp_path / 'dpsynth.db'}")
    try:
        with transaction(make_sessionmaker(engine)) as session:
            user = authenticate_password(session, "auditor", logins["'auditor'"])
            assert user.role is Role.auditor
    finally:
        engine.dispose()
