"""``create_app(settings)``: wires store, identity, catalogues, runtime and reconciler into FastAPI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI

from . import __version__
from .api import audit as audit_routes
from .api import catalog as catalog_routes
from .api import iam as iam_routes
from .api import keypairs as keypair_routes
from .api import notebooks as notebook_routes
from .api import ops as ops_routes
from .api import storage as storage_routes
from .api.deps import Services
from .api.errors import RequestIdMiddleware, install_error_handlers
from .api.inputs import ControlCharacterGuard
from .api.openapi import install_openapi
from .api.proxy import ProxyRefusal, ProxyTarget, close_notebook_proxy, install_notebook_proxy
from .auth.secrets import SecretBox
from .clock import ControlledClock, SystemClock
from .console.routes import install_console
from .controller.reconciler import Reconciler
from .domain.instances import Placement
from .domain.model import TRANSITIONAL, Status
from .observability import metrics
from .observability.audit import AuditTrail
from .observability.middleware import ObservabilityMiddleware
from .services.catalog import FlavorCatalog
from .services.identity import IdentityService
from .services.image_groups import ImageGroups
from .services.image_saves import ImageSaves
from .services.images import EngineReader, ImageCatalog
from .services.keypairs import KeyPairService
from .services.notebooks import NotebookService
from .services.request_auth import RequestAuthenticator
from .services.routing import RouteCache
from .services.signin import PasswordSignIn
from .services.storage import DynamicStorageService
from .services.tags import TagService
from .settings import Settings
from .store.db import Database
from .store.migrate import ensure_current, upgrade

log = logging.getLogger("nbfleet")


def build_runtime(settings: Settings, clock=None):
    """The configured runtime, checked: a local runtime whose sandbox cannot run raises SandboxUnavailable."""
    if settings.runtime == "simulated":
        from .runtime.simulated import SimulatedRuntime

        # For tests (``settings.testing``) crashes and idleness that a test declares are observed.
        return SimulatedRuntime(
            delay=settings.simulated_delay,
            failures=settings.simulated_fail,
            clock=clock,
            observes=settings.testing,
            reports_activity=settings.testing,
        )
    path_prefix = "/notebooks/" if settings.notebook_routing == "path" else None
    if settings.runtime == "docker":
        return build_docker_runtime(settings, path_prefix)
    if settings.runtime == "kubernetes":
        return build_kubernetes_runtime(settings, path_prefix)
    from .runtime.environments import ImageEnvironments
    from .runtime.limits import ResourceLimiter
    from .runtime.local import LocalRuntime

    isolation = build_isolation(settings)
    isolation.check([settings.image_root()])
    environments = ImageEnvironments(
        settings.image_root(),
        pythons=settings.image_pythons,
        shared=bool(getattr(isolation, "per_instance_uid", False)),
    )
    return LocalRuntime(
        settings.data_dir.resolve(),
        isolation=isolation,
        environments=environments,
        ready_timeout=settings.ready_timeout,
        limiter=ResourceLimiter(use_cgroups=settings.cgroups),
        path_prefix=path_prefix,
        storage=local_storage(settings, isolation),
    )


def host_mounts(settings: Settings, owner, *, private_instance_dirs: bool = False):
    """Dynamic mounts on this host (local and docker runtimes); ``owner(id)`` -> (uid, gid) of ``ma-user``."""
    from .runtime.mounts import HostMounts

    obs = settings.storage.obs
    credentials = None
    if obs.configured and obs.access_key and obs.secret_key:  # configured: both are there
        credentials = (obs.access_key, obs.secret_key.get_secret_value())
    return HostMounts(
        settings.data_dir.resolve(),
        settings.storage.policy(),
        owner=owner,
        obs_endpoint=obs.endpoint if obs.configured else None,
        obs_credentials=credentials,
        obs_region=obs.region,
        mount_timeout=settings.storage.mount_timeout,
        private_instance_dirs=private_instance_dirs,
    )


def local_storage(settings: Settings, isolation):
    """Dynamic mounts for the local runtime's sandboxes; none without one (single-user mode has no /data)."""
    import os

    from .runtime.sandbox import Bubblewrap, InstanceDirs

    if not isinstance(isolation, Bubblewrap):
        return None
    data_dir = settings.data_dir.resolve()

    def owner(instance_id: str) -> tuple[int, int]:  # who ma-user (uid 1000 inside) is on the host
        uid = isolation.host_uid(InstanceDirs.of(data_dir, instance_id)) if isolation.per_instance_uid else os.getuid()
        return uid, uid

    return host_mounts(settings, owner)


def build_docker_runtime(settings: Settings, path_prefix: str | None):
    from .runtime.docker import DockerRuntime, engine_client
    from .runtime.docker_images import DockerImageBuilder

    client = engine_client(settings.docker_host)
    client.ping()  # an engine that does not answer fails the start, not every instance
    builder = DockerImageBuilder(
        client,
        base_image=settings.docker_base_image,
        mirror=settings.docker_debian_mirror,
        scratch=settings.data_dir.resolve(),
    )
    from .runtime.sandbox import SANDBOX_GID, SANDBOX_UID

    # Every container's ma-user is uid 1000 / gid 100 (with userns-remap, what the engine maps them to).
    return DockerRuntime(
        settings.data_dir.resolve(),
        client,
        network=settings.docker_network,
        builder=builder,
        ready_timeout=max(settings.ready_timeout, 90.0),
        path_prefix=path_prefix,
        storage=host_mounts(settings, lambda _id: (SANDBOX_UID, SANDBOX_GID), private_instance_dirs=True),
        docker_host=settings.docker_host,
    )


def build_kubernetes_runtime(settings: Settings, path_prefix: str | None):
    from .runtime.kubernetes import KubernetesRuntime, api_client, check_reachable

    client = api_client(settings.kube_config, settings.kube_api_url)
    check_reachable(client, settings.kube_namespace)  # an API that does not answer fails the start
    return KubernetesRuntime(
        client,
        namespace=settings.kube_namespace,
        storage_class=settings.kube_storage_class,
        image_pull_secrets=settings.kube_image_pull_secrets,
        # Scheduling, attaching a volume and pulling an image take longer than a local start.
        ready_timeout=max(settings.ready_timeout, 300.0),
        path_prefix=path_prefix,
    )


def build_isolation(settings: Settings):
    from .runtime.sandbox import Bubblewrap, Unsandboxed, find_bwrap, parse_uid_range

    data_dir = settings.data_dir.resolve()
    if settings.single_user:
        return Unsandboxed(data_dir)
    return Bubblewrap(
        data_dir,
        bwrap=find_bwrap(settings.bwrap),
        uid_range=parse_uid_range(settings.sandbox_uid_range),
        network=settings.sandbox_network,
    )


def open_store(settings: Settings, *, migrate: bool | None = None) -> tuple[Database, IdentityService]:
    """The migrated database and the identity service (also used by ``nbfleet admin``).

    ``migrate`` (default: ``settings.migrate``) runs the migrations; without it the schema must already
    be current. Replicas starting together take turns (an advisory lock on PostgreSQL)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.sqlalchemy_url(), pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow)
    box = SecretBox.from_settings(settings.secret_key, settings.data_dir)
    with db.startup_lock():
        if settings.migrate if migrate is None else migrate:
            upgrade(db, box)
        else:
            ensure_current(db)
    identity = IdentityService(db, box, token_ttl_seconds=settings.token_ttl_seconds)
    return db, identity


def create_app(settings: Settings, *, clock=None, runtime=None, announce=print) -> FastAPI:
    if settings.testing and settings.runtime != "simulated":
        raise ValueError("a server for testing runs the simulated runtime (NBFLEET_RUNTIME=simulated)")
    if clock is None:
        clock = ControlledClock() if settings.testing else SystemClock()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        raise_open_files_limit()
        db, identity = open_store(settings)
        with db.startup_lock():  # one replica bootstraps; the others must not insert the same rows
            creds = identity.bootstrap(settings.data_dir, settings.base_url())
            identity.check_secret_key()
            rt = runtime or build_runtime(settings, clock)
            flavors = FlavorCatalog(settings.flavors_file, has_capacity=rt.has_capacity)
            engine = rt.images
            reader = (
                EngineReader(engine, asyncio.get_running_loop(), settings.image_inspect_timeout)
                if engine is not None
                else None
            )
            images = ImageCatalog(db, clock, settings.images_file, runtime_name=rt.name, engine=reader)
            images.sync_builtins()
        if creds is not None:
            announce(_credentials_banner(creds, settings))
        notebooks = NotebookService(db, clock, flavors, settings, secrets=identity.box)
        app.state.routes = RouteCache(notebooks.route)
        reconciler = Reconciler(
            db, rt, clock, settings, flavors, images, secrets=identity.box, on_status=app.state.routes.forget
        )
        notebooks.on_change = reconciler.wake
        images.on_purge = reconciler.purge_images
        groups = ImageGroups(db, clock, on_purge=reconciler.purge_images)
        saves = ImageSaves(notebooks, has_engine=engine is not None, runtime_name=rt.name, on_change=reconciler.wake)
        authenticator = RequestAuthenticator(
            identity,
            skew_seconds=settings.signature_skew_seconds,
            allow_unsigned_payload=settings.allow_unsigned_payload,
            refuse_replays=settings.refuse_replayed_requests,
        )
        signin = PasswordSignIn(
            identity,
            clock,
            free_failures=settings.signin_free_failures,
            max_delay_seconds=settings.signin_max_delay_seconds,
            concurrent_checks=settings.signin_concurrent_checks,
        )
        # A thread per database connection the process may open: more would only wait for the pool.
        api_threads = ThreadPoolExecutor(max_workers=db.max_connections, thread_name_prefix="nbfleet-api")
        app.state.services = Services(
            identity=identity,
            authenticator=authenticator,
            signin=signin,
            notebooks=notebooks,
            tags=TagService(notebooks),
            images=images,
            flavors=flavors,
            image_groups=groups,
            image_saves=saves,
            keypairs=KeyPairService(db, clock),
            storage=DynamicStorageService(
                notebooks, settings.storage.policy(), max_mounts=settings.storage.max_mounts, on_change=reconciler.wake
            ),
            reconciler=reconciler,
            runtime=rt,
            api_threads=api_threads,
        )
        app.state.settings = settings
        app.state.audit = AuditTrail(db, clock, retention_days=settings.audit_retention_days)
        app.state.metrics_scrape = metrics.scrape_registry(
            metrics.ScrapeCollector(
                db=db, runtime_name=rt.name, reconciler=reconciler, statuses=list(Status), transitional=TRANSITIONAL
            )
        )
        if settings.testing:
            from .testing.control import TestControl

            app.state.test_control = TestControl(clock, rt, reconciler, notebooks, identity)
        warm = build_warm_pool(settings, rt, flavors, images, reconciler)  # refuses a wrong setting first
        app.state.warm_pool = warm
        await reconciler.start()  # reaps orphans before the pool ends what dead owners left of theirs
        if warm is not None:
            await warm.start(reconciler.observer.in_store)
            notebooks.warm = warm
        gateway = await _start_ssh(settings, rt, notebooks)
        log.info(
            "nbfleet ready on %s (runtime %s, store %s)",
            settings.base_url(),
            rt.name,
            "sqlite" if db.is_sqlite else "postgresql",
        )
        try:
            yield
        finally:
            if gateway is not None:
                await gateway.stop()
            if warm is not None:
                notebooks.warm = None
                await warm.close()
            await reconciler.stop(stop_notebooks=settings.stop_notebooks_on_exit)
            await close_notebook_proxy(app)
            await rt.close()
            api_threads.shutdown(wait=True)
            db.dispose()

    app = FastAPI(
        title="nbfleet",
        version=__version__,
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
        openapi_url="/openapi.json",
    )
    install_error_handlers(app)
    app.add_middleware(ControlCharacterGuard)
    app.add_middleware(ObservabilityMiddleware)  # metrics, access log and audit of every request it lets in
    app.add_middleware(RequestIdMiddleware)  # added last: the outermost, so every answer carries the id
    app.include_router(ops_routes.router)
    app.include_router(notebook_routes.router)
    app.include_router(storage_routes.router)
    app.include_router(catalog_routes.router)
    app.include_router(iam_routes.router)
    app.include_router(keypair_routes.router)
    app.include_router(audit_routes.router)
    if settings.testing:  # never in a server people use: see Settings.testing
        from .api import testing as testing_routes

        app.include_router(testing_routes.router)
    install_console(app)
    install_openapi(app)

    async def resolve(notebook_id: str):
        where = await app.state.routes.resolve(notebook_id)
        if isinstance(where, Placement):
            return ProxyTarget(host=where.host, port=where.port, socket=where.socket)
        return ProxyRefusal(where.http_status, where.code, where.message)

    install_notebook_proxy(
        app,
        resolve,
        addresses=settings.addresses(),
        forget=lambda notebook_id: app.state.routes.forget(notebook_id),
        ws_max_message=settings.proxy_ws_max_message_bytes,
    )
    return app


def build_warm_pool(settings: Settings, rt, flavors: FlavorCatalog, images: ImageCatalog, reconciler: Reconciler):
    """The local runtime's warm pool (``runtime/warm_pool.py``) when ``warm_pool`` asks for one, else None."""
    if not settings.warm_pool:
        return None
    from .runtime.local import LocalRuntime
    from .runtime.warm_pool import WarmPool, parse_targets
    from .services.images import builtin_swr_path

    if not isinstance(rt, LocalRuntime):
        raise ValueError(f"warm_pool is for the local runtime; the {rt.name} runtime has none")
    targets = parse_targets(settings.warm_pool, {img["name"]: builtin_swr_path(img) for img in images.builtins})
    categories = {builtin_swr_path(img): img.get("resource_categories", ["CPU"]) for img in images.builtins}
    for swr_path, flavor_id in targets:
        flavor = flavors.get(flavor_id)
        if flavor is None:
            raise ValueError(f"warm_pool names the flavor {flavor_id!r}, which is not in the flavor catalogue")
        if flavor.category not in categories[swr_path]:  # a create of the pair would be refused (6330)
            raise ValueError(f"warm_pool pairs {swr_path} with {flavor_id}, a flavor the image does not run on")

    def spec_for(swr_path: str, flavor_id: str, instance_id: str, token: str):
        # As the reconciler makes a create's spec: the same limits and image environment. Not a first start:
        # a member's own start claims no warm member (its record already stands for it while it starts).
        return reconciler.spec_for(instance_id, flavor_id, swr_path, token, first_start=False)

    return WarmPool(rt, targets, spec_for)


def raise_open_files_limit() -> None:
    """Every SSH channel, proxied connection and instance holds descriptors in nbfleet: allow as many as the
    operator's hard limit does, not the usual soft 1024."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:
        log.warning("could not raise the open files limit: %s", exc)


async def _start_ssh(settings: Settings, rt, notebooks: NotebookService):
    """The SSH gateway, for a runtime that can open sessions in its instances (the sandboxed local one)."""
    if not settings.ssh_enabled() or not hasattr(rt, "session"):
        return None
    from .ssh.gateway import SshGateway

    gateway = SshGateway(
        host=settings.ssh_host or settings.host,
        port=settings.ssh_port,
        host_key=settings.ssh_host_key_path(),
        access=notebooks.ssh_access,
        enter=rt.session,
        max_channels_per_connection=settings.ssh_max_channels_per_connection,
        max_sessions_per_instance=settings.ssh_max_sessions_per_instance,
        max_sessions=settings.ssh_max_sessions,
    )
    try:
        await gateway.start()
    except OSError as exc:
        raise RuntimeError(
            f"the SSH gateway cannot listen on port {settings.ssh_port} ({exc.strerror or exc}); "
            "choose another with NBFLEET_SSH_PORT, or 0 for no SSH"
        ) from None
    return gateway


def _credentials_banner(creds: dict, settings: Settings) -> str:
    path = settings.data_dir / "credentials.json"
    return (
        "\n=== nbfleet: first start, bootstrap credentials (shown once) ===\n"
        f"  endpoint:   {creds['endpoint']}\n"
        f"  project_id: {creds['project_id']}\n"
        f"  user:       {creds['user_name']} ({creds['user_id']}, admin)\n"
        f"  AK:         {creds['ak']}\n"
        f"  SK:         {creds['sk']}\n"
        f"  saved to {path} (mode 0600)\n"
    )
