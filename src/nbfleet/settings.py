"""All configuration of nbfleet in one place: flags of ``nbfleet serve`` and ``NBFLEET_*`` variables."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .domain.lease import LeaseLimits


class LeaseSettings(BaseModel):
    """Allowed running times (ms). Shorter minimums are for tests and demos."""

    model_config = ConfigDict(extra="forbid")
    timing_min_ms: int = 3_600_000
    timing_max_ms: int = 259_200_000
    idle_min_ms: int = 900_000

    def limits(self) -> LeaseLimits:
        return LeaseLimits(timing_min=self.timing_min_ms, timing_max=self.timing_max_ms,
                           idle_min=self.idle_min_ms, idle_max=self.timing_max_ms)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NBFLEET_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./nbfleet-data")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in the data dir")
    migrate: bool = Field(default=True, description="run the schema migrations at start; false: the operator "
                          "runs `nbfleet db upgrade` and serve refuses an out-of-date schema")
    db_pool_size: int = Field(default=10, ge=1, description="connections each process keeps open")
    db_max_overflow: int | None = Field(default=None, ge=0, description="extra connections under load; "
                                        "default 10 (SQLite: 20)")
    runtime: Literal["simulated", "local"] = "local"
    public_url: str | None = Field(default=None, description="Base URL users reach nbfleet at; default http://host:port")

    # simulated runtime
    simulated_delay: float = Field(default=2.0, ge=0, description="seconds per progress step")
    simulated_fail: list[str] = Field(default_factory=list,
                                      description="failure rules, e.g. 'name=fail-*;step=3;op=create'")

    # local runtime
    ready_timeout: float = 60.0
    port_range_start: int = 20000
    port_range_end: int = 29999
    cgroups: bool = True
    stop_notebooks_on_exit: bool = False

    # API behaviour (spec §9)
    strict_limit: bool = False
    strict_delete: bool = False
    instance_quota: int = Field(default=10, description="instances per user; -1 = unlimited")
    lease: LeaseSettings = Field(default_factory=LeaseSettings)
    flavors_file: Path | None = None
    images_file: Path | None = None

    # Swagger UI and ReDoc pages load their scripts from a CDN, which would then run on nbfleet's origin;
    # no installed package ships them. /openapi.json is always served.
    api_docs: bool = Field(default=False, description="serve /docs and /redoc (their scripts come from a CDN)")

    # reconciler
    reconcile_interval: float = Field(default=1.0, gt=0, description="seconds between reconciler sweeps")
    observe_interval: float = Field(default=5.0, gt=0, description="seconds between liveness/lease checks")
    claim_seconds: float = Field(default=30.0, gt=0, description="how long a replica's claim on an instance "
                                 "lasts without renewal; a dead replica's work is taken over after this")
    max_concurrent_starts: int = 8
    max_pending_starts: int = Field(default=64, description="CREATING+STARTING instances before 429")

    # identity
    token_ttl_seconds: int = 86_400
    signature_skew_seconds: int = 900
    secret_key: str | None = Field(default=None, description="key that encrypts stored secret keys; "
                                   "default: <data dir>/secret.key")

    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'nbfleet.db').resolve()}"

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"
