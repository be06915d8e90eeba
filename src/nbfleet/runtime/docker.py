"""The Docker runtime: one container per instance, from the instance's image, through the Engine API.

Per instance::

    container  nbfleet-<id>            from the instance's image, as ma-user (1000:100), with the flavor's
                                       memory, CPUs and pids, no capabilities, no new privileges, its own
                                       PID namespace, the network of ``docker_network`` (none by default)
    volume     nbfleet-<id>-work       /home/ma-user/work: survives stop/start, goes on delete
    <data dir>/instances/<id>/run      bind-mounted at /run/nbfleet: Jupyter's socket, nothing else

As on ModelArts, each start makes a fresh container from the image and stop removes it: what the owner
installs lives in the container's layer while the instance runs, and saving the instance as an image
(``ImageEngine.commit``) keeps it. Every container and volume carries labels (instance, project, owner,
data dir), so after a restart of nbfleet the reconciler adopts what runs and removes what nobody owns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..domain.instances import FlavorLimits, InstanceSpec, Placement
from ..domain.model import StepStatus
from .base import (
    Activity,
    DynamicStorage,
    HostStorage,
    ImageEngine,
    InStore,
    Observation,
    Reporter,
    RuntimeFailure,
    StoreLookup,
    gpus_on_host,
)
from .docker_images import DockerImageBuilder, DockerImages, ImageBuildError
from .environments import EnvironmentSpec, ImageEnvironmentError
from .jupyter import JupyterProbe, base_url_for, normal_prefix, server_args
from .processes import describe_rc
from .sandbox import RUN_DIR, SANDBOX_GID, SANDBOX_UID, SOCKET_NAME, WORK, InstanceDirs
from .sessions import ContainerEntry, SessionRefused
from .steps import failed_start

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

log = logging.getLogger(__name__)

LABEL_INSTANCE = "nbfleet.instance"
LABEL_PROJECT = "nbfleet.project"
LABEL_OWNER = "nbfleet.owner"
LABEL_DATA_DIR = "nbfleet.data-dir"
SOCKET = f"{RUN_DIR}/{SOCKET_NAME}"
TOKEN_FILE = "/run/nbfleet-token"
# Reads the instance's token into Jupyter's environment, then runs jupyter_server with the arguments.
TOKEN_THEN_JUPYTER = (
    "import os, runpy, sys; os.environ['JUPYTER_TOKEN'] = open('/run/nbfleet-token').read(); "
    "sys.argv[0] = 'jupyter-server'; runpy.run_module('jupyter_server', run_name='__main__', "
    "alter_sys=True)"
)
DEFAULT_PIDS_MAX = 4096
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def engine_client(base_url: str | None = None) -> DockerClient:
    """A Docker Engine client: ``base_url`` (``NBFLEET_DOCKER_HOST``), else ``DOCKER_HOST``, else the default."""
    import docker

    return docker.DockerClient(base_url=base_url) if base_url else docker.from_env()


class DockerRuntime:
    name = "docker"
    observes = True
    reports_activity = False  # observes already: idle checks run anyway

    def __init__(
        self,
        data_dir: Path,
        client: DockerClient,
        *,
        network: str = "none",
        ready_timeout: float = 90.0,
        stop_timeout: float = 5.0,
        builder: DockerImageBuilder | None = None,
        path_prefix: str | None = None,
        pids_max: int = DEFAULT_PIDS_MAX,
        storage: HostStorage | None = None,
        docker_host: str | None = None,
    ):
        """``network``: ``none`` (instances reach nothing; Jupyter answers on its socket), ``host``, or the
        name of a Docker network. ``path_prefix`` as for the local runtime (None: Jupyter at ``/``)."""
        self.data_dir = Path(data_dir).resolve()
        self.client = client
        self.network = network
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.builder = builder or DockerImageBuilder(client)
        self.path_prefix = normal_prefix(path_prefix)
        self.pids_max = pids_max
        self.docker_host = docker_host  # for SSH sessions' exec helper; None: DOCKER_HOST or the default
        self._images = DockerImages(client, self.container_name)
        self.images: ImageEngine | None = self._images
        self.jupyter = JupyterProbe(self.base_url)
        self._builds: dict[str, asyncio.Lock] = {}
        # Dynamic mounts (``mounts.HostMounts``): /data of every container, prepared before it starts.
        self._host_storage = storage
        self.storage: DynamicStorage | None = storage
        self.remapped = _user_namespaces_remapped(client)
        if not self.remapped:
            log.warning(
                "the Docker engine does not remap user namespaces: every container's ma-user is host "
                "uid 1000, which any local account of that uid can signal and inspect (run dockerd with "
                "--userns-remap=default, docs/operations.md)"
            )

    # -- names ----------------------------------------------------------------------------

    def container_name(self, instance_id: str) -> str:
        return f"nbfleet-{instance_id}"

    def volume_name(self, instance_id: str) -> str:
        return f"nbfleet-{instance_id}-work"

    def dirs(self, instance_id: str) -> InstanceDirs:
        return InstanceDirs.of(self.data_dir, instance_id)

    def base_url(self, instance_id: str) -> str:
        return base_url_for(self.path_prefix, instance_id)

    def _labels(self, spec: InstanceSpec) -> dict[str, str]:
        return {
            LABEL_INSTANCE: spec.id,
            LABEL_PROJECT: spec.project_id,
            LABEL_OWNER: spec.owner_id,
            LABEL_DATA_DIR: str(self.data_dir),
        }

    def isolation(self) -> dict[str, Any]:
        return {
            "mechanism": "docker",
            "user": "ma-user (uid 1000)",
            "network": self.network,
            "host_uid": "remapped by the engine (userns-remap)"
            if self.remapped
            else "1000, the same for every container (the engine does not remap user namespaces)",
            "namespaces": ["mount", "pid", "ipc", "uts"] + (["network"] if self.network != "host" else []),
            "capabilities": "none",
            "limits": "cgroups (the engine's)",
        }

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, spec: InstanceSpec, reporter: Reporter) -> Placement:
        step = 1
        try:
            dirs = self.dirs(spec.id)
            await reporter.step(1, StepStatus.PROCESSING, "Preparing the work volume")
            await asyncio.to_thread(self._remove_container, spec.id)  # a start after a crash starts clean
            await asyncio.to_thread(self._prepare_storage, spec, dirs)
            await reporter.step(1, StepStatus.COMPLETED, f"Work volume ready at {WORK}")

            step = 2
            await reporter.step(2, StepStatus.PROCESSING, f"Preparing the {spec.image.name} image")
            await self._ensure_image(spec, reporter)
            limits = _describe_limits(spec.flavor, self.pids_max)
            await reporter.event("limits", limits)
            await reporter.event(
                "sandbox",
                f"container: {', '.join(self.isolation()['namespaces'])} namespaces, "
                f"ma-user (uid 1000), no capabilities, network: {self.network}",
            )
            await reporter.step(2, StepStatus.COMPLETED, f"{spec.image.name} image ready; {limits}")

            step = 3
            await reporter.step(3, StepStatus.PROCESSING, "Configuring the network")
            network = "of the host" if self.network == "host" else self.network
            await reporter.step(3, StepStatus.COMPLETED, f"Network {network}; Jupyter reachable through nbfleet only")

            step = 4
            await reporter.step(4, StepStatus.PROCESSING, "Starting Jupyter")
            started = time.monotonic()
            host = self._host_storage
            data = await asyncio.to_thread(host.prepare, spec.id) if host is not None else None
            await asyncio.to_thread(self._run_container, spec, dirs, data)
            placement = Placement(
                host="127.0.0.1", socket=str(dirs.socket), details={"container": self.container_name(spec.id)}
            )
            await self.jupyter.wait_ready(
                placement, spec, self.ready_timeout, lambda: asyncio.to_thread(self._ended, spec.id)
            )
            await reporter.step(4, StepStatus.COMPLETED, f"Jupyter ready in {time.monotonic() - started:.1f} s")
            return placement
        except BaseException as exc:
            try:
                await asyncio.shield(asyncio.to_thread(self._remove_container, spec.id))
            except Exception:  # the start's own failure is what the user needs to see
                log.exception("instance %s: could not remove the container of a failed start", spec.id)
            raise await failed_start(exc, step, reporter, spec.id, _engine_message) from None

    async def _ensure_image(self, spec: InstanceSpec, reporter: Reporter) -> None:
        found = await self._images.inspect(spec.image.swr_path)
        if found is not None:
            return
        if not spec.image.environment:
            raise RuntimeFailure(
                f"the image {spec.image.swr_path} is not in the engine and could not be pulled", step=2
            )
        lock = self._builds.setdefault(spec.image.swr_path, asyncio.Lock())
        async with lock:  # concurrent starts of an unbuilt image build it once
            if await self._images.inspect(spec.image.swr_path) is not None:
                return
            await reporter.step(2, StepStatus.PROCESSING, f"Building the {spec.image.name} image (first use)")
            await reporter.event("image", f"Building the {spec.image.name} image")
            try:
                declared = EnvironmentSpec.from_json(spec.image.environment)
                await asyncio.to_thread(self.builder.build, spec.image.swr_path, declared)
            except (ImageBuildError, ImageEnvironmentError) as exc:
                log.warning("instance %s: image %s: %s", spec.id, spec.image.name, exc)
                raise RuntimeFailure(f"the {spec.image.name} image could not be built: {exc}", step=2) from None

    def _prepare_storage(self, spec: InstanceSpec, dirs: InstanceDirs) -> None:
        from docker.errors import NotFound

        try:
            self.client.volumes.get(self.volume_name(spec.id))
        except NotFound:
            self.client.volumes.create(self.volume_name(spec.id), labels=self._labels(spec))
        # Only nbfleet (root) passes the instance directory. The run directory is the container's to write,
        # so it is made anew at each start: nothing the last container left there (a link, a FIFO) remains.
        dirs.root.mkdir(parents=True, exist_ok=True)
        os.chmod(dirs.root, 0o700)
        shutil.rmtree(dirs.run, ignore_errors=True)
        dirs.run.mkdir(mode=0o700)
        os.chown(dirs.run, SANDBOX_UID, SANDBOX_GID)

    def _run_container(self, spec: InstanceSpec, dirs: InstanceDirs, data: Path | None = None) -> None:
        from docker.types import Mount

        memory = spec.flavor.memory_mb * 1024 * 1024 if spec.flavor.memory_mb > 0 else None
        # The token reaches Jupyter through a file mounted read-only, never the container's configuration
        # (the engine copies a container's environment into every image saved from it). The file lies in
        # the instance's directory, which only nbfleet can enter; nothing of the container's is followed.
        token = dirs.root / "token"
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o400)
        with os.fdopen(fd, "w") as fh:
            os.fchown(fh.fileno(), SANDBOX_UID, SANDBOX_GID)
            fh.write(spec.token)
        command = [
            "python",
            "-c",
            TOKEN_THEN_JUPYTER,
            *server_args(socket=SOCKET, root_dir=WORK, base_url=self.base_url(spec.id)),
        ]
        options: dict[str, Any] = dict(
            name=self.container_name(spec.id),
            command=command,
            detach=True,
            labels=self._labels(spec),
            user=f"{SANDBOX_UID}:{SANDBOX_GID}",
            working_dir=WORK,
            hostname=f"notebook-{spec.id[:8]}",
            environment={
                "JUPYTER_RUNTIME_DIR": "/tmp/.jupyter-runtime",
                "HOME": "/home/ma-user",
                "PYTHONUNBUFFERED": "1",
            },
            mounts=[
                Mount(WORK, self.volume_name(spec.id), type="volume"),
                Mount(RUN_DIR, str(dirs.run), type="bind"),
                Mount(TOKEN_FILE, str(token), type="bind", read_only=True),
                # SFTP sessions run OpenSSH's sftp-server in the container: the host's, read-only
                # (the catalogue's images are the host's Debian, whose C library it needs).
                *(
                    [Mount(SFTP_SERVER, SFTP_SERVER, type="bind", read_only=True)]
                    if os.path.isfile(SFTP_SERVER)
                    else []
                ),
            ],
            tmpfs={"/tmp": f"size={memory or 1 << 30}"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            init=True,
            pids_limit=self.pids_max,
            network_mode=self.network,
            mem_limit=memory,
            memswap_limit=memory,
            nano_cpus=int(spec.flavor.vcpus * 1e9) if spec.flavor.vcpus > 0 else None,
        )
        if data is not None:
            # rslave: what nbfleet mounts below the (shared) data directory later reaches the running container.
            options["mounts"].append(Mount("/data", str(data), type="bind", propagation="rslave"))
        if spec.flavor.gpus > 0:
            from docker.types import DeviceRequest

            options["device_requests"] = [DeviceRequest(count=spec.flavor.gpus, capabilities=[["gpu"]])]
        self.client.containers.run(spec.image.swr_path, **options)

    def _ended(self, instance_id: str) -> str | None:
        """Why the instance's container is no longer running (None while it runs)."""
        from docker.errors import NotFound

        try:
            container = self.client.containers.get(self.container_name(instance_id))
        except NotFound:
            return "the instance's container is gone"
        if container.status in ("created", "running", "restarting"):
            return None
        state = container.attrs.get("State") or {}
        reason = "Jupyter exited"
        if state.get("OOMKilled"):
            reason += " (OOMKilled: the flavor's memory was exceeded)"
        elif state.get("ExitCode") is not None:
            reason += f" with {describe_rc(state['ExitCode'])}"
        logs = _tail(container)
        return reason + (f"; last log: {logs}" if logs else "")

    def session(self, instance_id: str, placement: Placement | None) -> ContainerEntry:
        """How to run commands in the running instance, for an SSH session: an exec in its container."""
        from docker.errors import APIError, NotFound

        try:
            container = self.client.containers.get(self.container_name(instance_id))
        except (NotFound, APIError):
            raise SessionRefused("the instance is not running") from None
        if container.status != "running" or container.labels.get(LABEL_DATA_DIR) != str(self.data_dir):
            raise SessionRefused("the instance is not running")
        assert container.id is not None  # a container the engine returned has its id
        return ContainerEntry(
            container=container.id,
            docker_host=self.docker_host,
            env={
                "HOME": "/home/ma-user",
                "USER": "ma-user",
                "LOGNAME": "ma-user",
                "SHELL": "/bin/bash",
                "LANG": "C.UTF-8",
            },
            private_network=self.network != "host",
        )

    async def stop(self, spec: InstanceSpec, placement: Placement | None) -> None:
        await asyncio.to_thread(self._remove_container, spec.id, self.stop_timeout)
        await self.jupyter.forget(placement)

    def _remove_container(self, instance_id: str, grace: float = 0.0) -> None:
        from docker.errors import APIError, NotFound

        try:
            container = self.client.containers.get(self.container_name(instance_id))
        except NotFound:
            return
        try:
            if grace and container.status == "running":
                container.stop(timeout=int(max(grace, 1)))
            container.remove(force=True)
        except NotFound:
            pass
        except APIError as exc:
            raise RuntimeFailure(
                f"the engine could not remove the instance's container: {_engine_message(exc)}"
            ) from exc

    async def delete(self, spec: InstanceSpec, placement: Placement | None) -> None:
        await self.stop(spec, placement)
        await asyncio.to_thread(self._remove_storage, spec.id)

    def _remove_storage(self, instance_id: str) -> None:
        from docker.errors import APIError, NotFound

        try:
            self.client.volumes.get(self.volume_name(instance_id)).remove(force=True)
        except NotFound:
            pass
        except APIError as exc:
            raise RuntimeFailure(f"the engine could not remove the work volume: {_engine_message(exc)}") from exc
        shutil.rmtree(self.dirs(instance_id).root, ignore_errors=True)

    async def observe(self, spec: InstanceSpec, placement: Placement | None) -> Observation:
        why = await asyncio.to_thread(self._ended, spec.id)
        return Observation(why is None, why)

    async def adopt(self, spec: InstanceSpec, placement: Placement | None) -> bool:
        if placement is None or not (await self.observe(spec, placement)).alive:
            return False
        return await self.jupyter.answers(placement, spec)

    async def activity(self, spec: InstanceSpec, placement: Placement) -> Activity | None:
        return await self.jupyter.activity(spec, placement)

    async def reap_orphans(self, lookup: StoreLookup) -> list[str]:
        containers, volumes = await asyncio.to_thread(self._owned)
        found = set(containers) | set(volumes)
        if not found:
            return []
        store = await lookup(found)
        return await asyncio.to_thread(self._reap, containers, volumes, store)

    def _owned(self) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        """This data dir's containers and work volumes, by instance."""
        mine: dict[str, str | list[str] | bool] = {"label": [f"{LABEL_DATA_DIR}={self.data_dir}"]}
        containers: dict[str, list[Any]] = {}
        for container in self.client.containers.list(all=True, filters=mine):
            if instance := container.labels.get(LABEL_INSTANCE):
                containers.setdefault(instance, []).append(container)
        volumes: dict[str, list[Any]] = {}
        for volume in self.client.volumes.list(filters=mine):
            if instance := (volume.attrs.get("Labels") or {}).get(LABEL_INSTANCE):
                volumes.setdefault(instance, []).append(volume)
        return containers, volumes

    def _reap(self, containers: dict[str, list[Any]], volumes: dict[str, list[Any]], store: InStore) -> list[str]:
        """Remove the containers of instances that are not live, and the volumes of those not stored at all
        (a STOPPED instance keeps its work volume: it is the user's data)."""
        orphans = set()
        for instance, found in containers.items():
            if instance not in store.live:
                log.warning("removing the container of instance %s (not running in the store)", instance)
                for container in found:
                    container.remove(force=True)
                orphans.add(instance)
        for instance, found in volumes.items():
            if instance not in store.stored:
                log.warning("removing the work volume of instance %s (not in the store)", instance)
                for volume in found:
                    volume.remove(force=True)
                shutil.rmtree(self.dirs(instance).root, ignore_errors=True)
                orphans.add(instance)
        return sorted(orphans)

    def has_capacity(self, flavor: FlavorLimits) -> bool:
        return gpus_on_host(flavor)

    async def close(self) -> None:
        await self.jupyter.close()
        self._images.close()
        await asyncio.to_thread(self.client.close)


def _user_namespaces_remapped(client: DockerClient) -> bool:
    try:
        return any("name=userns" in option for option in client.info().get("SecurityOptions") or [])
    except Exception:
        return False


def _describe_limits(flavor: FlavorLimits, pids: int) -> str:
    return f"container limits: memory {flavor.memory_mb} MiB, cpu {flavor.vcpus} vCPU, pids {pids}"


def _tail(container: Container, lines: int = 8, limit: int = 600) -> str:
    try:
        text = container.logs(tail=lines).decode("utf-8", "replace")
    except Exception:
        return ""
    joined = " | ".join(line.strip()[:240] for line in text.splitlines() if line.strip())
    return joined if len(joined) <= limit else "..." + joined[-(limit - 3) :]


def _engine_message(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)
