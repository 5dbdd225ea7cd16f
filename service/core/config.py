"""Every setting of the service, read from ``DPSYNTH_*`` environment variables.

One ``Settings`` object is read by the API, the workers, the CLI and Alembic alike.
Defaults give the embedded deployment: SQLite, local disk and a SQLite-backed Celery
broker under ``data_dir``. Production mode fails closed: no generated keys.
"""

from __future__ import annotations

import base64
import functools
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

KEY_FILE = "master.key"
SESSION_KEY_FILE = "session.key"
SIGNING_KEY_FILE = "signing.key"


class Settings(BaseSettings):
    """Service settings; each field is the environment variable ``DPSYNTH_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="DPSYNTH_", extra="ignore")

    data_dir: Path = Field(
        default=Path.home() / ".dpsynth",
        description="where the embedded defaults keep the database, broker, storage and key",
    )
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir")
    broker_url: str | None = Field(default=None, description="Celery broker; default sqla+sqlite in data_dir")
    storage_url: str | None = Field(default=None, description="fsspec URL (file://, s3://); default data_dir")
    encryption_key: SecretStr | None = Field(
        default=None, description="base64 of 32 random bytes; wraps every dataset's own key"
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="base64 of the 32-byte Ed25519 private seed that signs audit bundles",
    )
    session_secret: SecretStr | None = Field(
        default=None, description="signs the web form's session cookies; at least 32 characters"
    )
    session_https_only: bool | None = Field(
        default=None, description="send the session cookie over HTTPS only; default: on in production"
    )
    session_max_age: int = Field(default=8 * 3600, gt=0, description="seconds a web login lasts")
    production: bool = Field(default=False, description="refuse to start without explicit secrets")
    max_upload_bytes: int = Field(default=2 << 30, gt=0, description="uploads over this get a 413")
    raw_retention_days: float | None = Field(
        default=None,
        ge=0,
        description="days a raw upload is kept, then erased; none: until erased on request",
    )
    lease_seconds: float = Field(default=60.0, gt=0, description="a job's lease; renewed by heartbeats")
    heartbeat_seconds: float = Field(default=10.0, gt=0, description="how often a training worker renews")
    reconcile_seconds: float = Field(default=30.0, gt=0, description="how often expired leases are swept")
    resend_seconds: float = Field(
        default=600.0, gt=0, description="re-send a queued job's message after this long unclaimed"
    )
    worker_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="where a worker trains; auto: CUDA when present"
    )
    worker_queues: str | None = Field(
        default=None,
        description="queues a worker serves, preferred first; default gpu,cpu on CUDA, else cpu,gpu",
    )
    job_memory_mb: int | None = Field(
        default=None,
        gt=0,
        description="memory one job may use on a worker; over it the job fails (retried once)",
    )
    empirical_audit: bool = Field(
        default=True,
        description="audit every release with canaries on public data: a lower bound on its epsilon",
    )
    empirical_audit_canaries: int = Field(
        default=256, ge=2, le=100_000, description="canaries per attack of the empirical audit"
    )
    cpu_max_rows: int = Field(
        default=100_000, ge=0, description="jobs on datasets up to this many rows go to the cpu queue"
    )
    tenant_max_running_jobs: int | None = Field(
        default=None,
        gt=0,
        description="running jobs per tenant, unless the tenant sets its own; none: no limit",
    )
    broker_poll_seconds: float = Field(default=0.5, gt=0, description="polling interval of the SQL broker")
    broker_visibility_seconds: float = Field(
        default=12 * 3600.0,
        gt=0,
        description="Redis: an unacknowledged message (a running job's, too) is redelivered after this",
    )

    @field_validator("encryption_key", "signing_key")
    @classmethod
    def _key_is_32_bytes(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None:
            name = f"DPSYNTH_{(info.field_name or '').upper()}"
            try:
                raw = base64.b64decode(value.get_secret_value(), validate=True)
            except ValueError:
                raise ValueError(f"{name} is not base64") from None
            if len(raw) != 32:
                raise ValueError(
                    f"{name} must be 32 bytes, got {len(raw)}; make one with: dpsynth admin new-key"
                )
        return value

    @field_validator("session_secret")
    @classmethod
    def _secret_is_long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError(
                "DPSYNTH_SESSION_SECRET must be at least 32 characters; make one with: dpsynth admin new-key"
            )
        return value

    @property
    def database(self) -> str:
        """The database URL actually used."""
        return self.database_url or f"sqlite:///{self.data_dir / 'dpsynth.db'}"

    @property
    def broker(self) -> str:
        """The Celery broker URL actually used."""
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def storage(self) -> str:
        """The storage URL actually used."""
        return self.storage_url or (self.data_dir / "storage").as_uri()

    @property
    def cookies_https_only(self) -> bool:
        """Whether the session cookie is marked Secure (explicit setting, else production)."""
        return self.production if self.session_https_only is None else self.session_https_only

    def _generated(self, name: str) -> str:
        """A random secret kept in ``data_dir/name`` (mode 0600), made on first use."""
        path = self.data_dir / name
        if not path.exists():
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first
                pass
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(base64.b64encode(secrets.token_bytes(32)).decode())
        return path.read_text().strip()

    def master_key(self) -> bytes:
        """The 32-byte key that wraps per-dataset keys.

        Outside production a missing key is generated once into ``data_dir`` (mode 0600)
        so the embedded default works out of the box; production refuses.

        Raises:
            RuntimeError: production mode without ``DPSYNTH_ENCRYPTION_KEY``.
        """
        if self.encryption_key is not None:
            return base64.b64decode(self.encryption_key.get_secret_value())
        if self.production:
            raise RuntimeError(
                "DPSYNTH_PRODUCTION is set but DPSYNTH_ENCRYPTION_KEY is not: refusing to store raw "
                "uploads under a generated key; set DPSYNTH_ENCRYPTION_KEY (base64 of 32 random bytes)"
            )
        return base64.b64decode(self._generated(KEY_FILE))

    def session_key(self) -> str:
        """The secret that signs web session cookies.

        Outside production a missing secret is generated once into ``data_dir`` (mode 0600),
        like the master key, so sessions survive a restart; production refuses.

        Raises:
            RuntimeError: production mode without ``DPSYNTH_SESSION_SECRET``.
        """
        if self.session_secret is not None:
            return self.session_secret.get_secret_value()
        if self.production:
            raise RuntimeError(
                "DPSYNTH_PRODUCTION is set but DPSYNTH_SESSION_SECRET is not: refusing to sign web "
                "sessions with a generated secret; set DPSYNTH_SESSION_SECRET (32 random bytes, base64)"
            )
        return self._generated(SESSION_KEY_FILE)

    def signing_seed(self) -> bytes:
        """The 32-byte Ed25519 private seed that signs audit bundles (``service.core.signing``).

        Outside production a missing key is generated once into ``data_dir`` (mode 0600),
        like the master key, so bundles made on a laptop verify across restarts; production
        refuses, since a key nobody chose cannot be published ahead of time.

        Raises:
            RuntimeError: production mode without ``DPSYNTH_SIGNING_KEY``.
        """
        if self.signing_key is not None:
            return base64.b64decode(self.signing_key.get_secret_value())
        if self.production:
            raise RuntimeError(
                "DPSYNTH_PRODUCTION is set but DPSYNTH_SIGNING_KEY is not: refusing to sign audit "
                "bundles with a generated key; set DPSYNTH_SIGNING_KEY (base64 of 32 random bytes: "
                "dpsynth admin new-key)"
            )
        return base64.b64decode(self._generated(SIGNING_KEY_FILE))

    def check_production(self) -> None:
        """Fail closed in production: explicit keys, database, broker and storage.

        Raises:
            RuntimeError: naming every missing setting at once.
        """
        if not self.production:
            return
        missing = [
            f"DPSYNTH_{name.upper()}"
            for name in (
                "encryption_key",
                "database_url",
                "broker_url",
                "storage_url",
                "session_secret",
                "signing_key",
            )
            if getattr(self, name) is None
        ]
        if missing:
            names = ", ".join(missing)
            raise RuntimeError(f"DPSYNTH_PRODUCTION is set but {names} is not; refusing to start")


@functools.cache
def get_settings() -> Settings:
    """The process's settings (read once from the environment)."""
    return Settings()
