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

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

KEY_FILE = "master.key"


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
    production: bool = Field(default=False, description="refuse to start without explicit secrets")
    max_upload_bytes: int = Field(default=2 << 30, gt=0, description="uploads over this get a 413")
    lease_seconds: float = Field(default=60.0, gt=0, description="a job's lease; renewed by heartbeats")
    heartbeat_seconds: float = Field(default=10.0, gt=0, description="how often a training worker renews")
    reconcile_seconds: float = Field(default=30.0, gt=0, description="how often expired leases are swept")
    resend_seconds: float = Field(
        default=600.0, gt=0, description="re-send a queued job's message after this long unclaimed"
    )
    worker_concurrency: int = Field(default=1, gt=0, description="training processes per worker")
    broker_poll_seconds: float = Field(default=0.5, gt=0, description="polling interval of the SQL broker")

    @field_validator("encryption_key")
    @classmethod
    def _key_is_32_bytes(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                raw = base64.b64decode(value.get_secret_value(), validate=True)
            except ValueError:
                raise ValueError("DPSYNTH_ENCRYPTION_KEY is not base64") from None
            if len(raw) != 32:
                raise ValueError(
                    f"DPSYNTH_ENCRYPTION_KEY must be 32 bytes, got {len(raw)}; make one with: "
                    "dpsynth admin new-key"
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
        path = self.data_dir / KEY_FILE
        if not path.exists():
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(base64.b64encode(secrets.token_bytes(32)).decode())
        return base64.b64decode(path.read_text().strip())

    def check_production(self) -> None:
        """Fail closed in production: explicit key, database, broker and storage.

        Raises:
            RuntimeError: naming every missing setting at once.
        """
        if not self.production:
            return
        missing = [
            f"DPSYNTH_{name.upper()}"
            for name in ("encryption_key", "database_url", "broker_url", "storage_url")
            if getattr(self, name) is None
        ]
        if missing:
            names = ", ".join(missing)
            raise RuntimeError(f"DPSYNTH_PRODUCTION is set but {names} is not; refusing to start")


@functools.cache
def get_settings() -> Settings:
    """The process's settings (read once from the environment)."""
    return Settings()
