import base64
import os
import stat

import pytest
from pydantic import ValidationError

from service.api.main import create_app
from service.core.config import Settings


def test_defaults_are_the_embedded_deployment(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert settings.database == f"sqlite:///{tmp_path / 'dpsynth.db'}"
    assert settings.broker == f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    assert settings.storage == (tmp_path / "storage").as_uri()


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DPSYNTH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DPSYNTH_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("DPSYNTH_MAX_UPLOAD_BYTES", "1234")
    settings = Settings()
    assert (settings.database, settings.max_upload_bytes) == ("postgresql+psycopg://u@h/db", 1234)


def test_missing_key_is_generated_once_owner_only_outside_production(tmp_path):
    first = Settings(data_dir=tmp_path / "d").master_key()
    assert len(first) == 32
    assert Settings(data_dir=tmp_path / "d").master_key() == first
    assert stat.S_IMODE((tmp_path / "d" / "master.key").stat().st_mode) == 0o600


def test_production_refuses_to_start_without_explicit_secrets(tmp_path):
    settings = Settings(data_dir=tmp_path, production=True)
    with pytest.raises(RuntimeError, match="DPSYNTH_ENCRYPTION_KEY is not"):
        settings.master_key()
    with pytest.raises(RuntimeError, match="ENCRYPTION_KEY, DPSYNTH_DATABASE_URL, DPSYNTH_BROKER_URL"):
        create_app(settings)
    assert not (tmp_path / "master.key").exists()


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(os.urandom(16)).decode()])
def test_bad_encryption_key_is_refused(value):
    with pytest.raises(ValidationError, match="DPSYNTH_ENCRYPTION_KEY"):
        Settings(encryption_key=value)


def test_session_secret_is_generated_once_outside_production(tmp_path):
    first = Settings(data_dir=tmp_path / "d").session_key()
    assert len(first) >= 32
    assert Settings(data_dir=tmp_path / "d").session_key() == first
    assert stat.S_IMODE((tmp_path / "d" / "session.key").stat().st_mode) == 0o600
    assert Settings(data_dir=tmp_path / "d", session_secret="s" * 32).session_key() == "s" * 32


def test_production_needs_an_explicit_session_secret(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        production=True,
        encryption_key=base64.b64encode(os.urandom(32)).decode(),
        signing_key=base64.b64encode(os.urandom(32)).decode(),
        database_url="sqlite:///x.db",
        broker_url="redis://h",
        storage_url="file:///tmp/x",
    )
    with pytest.raises(RuntimeError, match="DPSYNTH_SESSION_SECRET is not"):
        settings.session_key()
    with pytest.raises(RuntimeError, match="but DPSYNTH_SESSION_SECRET is not; refusing to start"):
        settings.check_production()
    assert settings.cookies_https_only
    assert not Settings(data_dir=tmp_path).cookies_https_only
    assert not (tmp_path / "session.key").exists()


def test_short_session_secret_is_refused():
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(session_secret="too short")


def test_signing_key_is_generated_once_outside_production(tmp_path):
    first = Settings(data_dir=tmp_path / "d").signing_seed()
    assert len(first) == 32
    assert Settings(data_dir=tmp_path / "d").signing_seed() == first
    assert stat.S_IMODE((tmp_path / "d" / "signing.key").stat().st_mode) == 0o600
    seed = os.urandom(32)
    assert (
        Settings(data_dir=tmp_path / "d", signing_key=base64.b64encode(seed).decode()).signing_seed() == seed
    )


def test_production_needs_an_explicit_signing_key(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        production=True,
        encryption_key=base64.b64encode(os.urandom(32)).decode(),
        session_secret="s" * 32,
        database_url="sqlite:///x.db",
        broker_url="redis://h",
        storage_url="file:///tmp/x",
    )
    with pytest.raises(RuntimeError, match="DPSYNTH_SIGNING_KEY is not: refusing to sign audit bundles"):
        settings.signing_seed()
    with pytest.raises(RuntimeError, match="but DPSYNTH_SIGNING_KEY is not; refusing to start"):
        settings.check_production()
    assert not (tmp_path / "signing.key").exists()


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(os.urandom(31)).decode()])
def test_bad_signing_key_is_refused(value):
    with pytest.raises(ValidationError, match="DPSYNTH_SIGNING_KEY"):
        Settings(signing_key=value)
