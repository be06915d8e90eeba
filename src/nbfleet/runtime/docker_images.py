"""The Docker runtime's images: the catalogue's images built offline, and the engine's images.

A built-in image is built from its catalogue declaration, the same ``environment`` the local runtime turns
into a Python environment: a Debian root file system made with debootstrap from the Debian mirror (or
``docker_base_image``), imported once as ``nbfleet/base``, then one Dockerfile per image that installs
its packages into ``/opt/nbfleet/env`` and adds ``ma-user`` (uid 1000, group ``ma-group`` 100). Every
build is labelled with the digest of its inputs, so building unchanged inputs again finds the image and
takes no time.

``DockerImages`` is the runtime's ``ImageEngine``: what the engine has (``inspect``), saving a running
instance as an image (``commit``: its container's layer, never its work volume or its token), removing one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..domain.instances import InstanceSpec, Placement
from .base import EngineImage, RuntimeFailure
from .environments import EnvironmentSpec

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.images import Image

_T = TypeVar("_T")

log = logging.getLogger(__name__)

BASE_REPOSITORY = "nbfleet/base"
LABEL_RECIPE = "nbfleet.recipe"
LABEL_SERVES = "nbfleet.serves"
LABEL_SAVED_FROM = "nbfleet.saved-from"
SUITE = "bookworm"  # Debian 12: Python 3.11
SUITE_PYTHON = "3.11"
ENV_PREFIX = "/opt/nbfleet/env"
BUILD_TIMEOUT = 1800


class ImageBuildError(Exception):
    """A catalogue image could not be built; the message says why."""


def split_reference(swr_path: str) -> tuple[str, str]:
    """``registry/ns/name:tag`` → (``registry/ns/name``, ``tag``); no tag is ``latest``."""
    slash = swr_path.rfind("/")
    colon = swr_path.rfind(":")
    if colon > slash:
        return swr_path[:colon], swr_path[colon + 1 :]
    return swr_path, "latest"


CA_FILE = "/etc/ssl/certs/ca-certificates.crt"


def dockerfile(base: str, spec: EnvironmentSpec) -> str:
    packages = " ".join(_quote(p) for p in spec.packages)
    # The host's own certificate authorities (/usr/local/share/ca-certificates: a company proxy's, say)
    # are trusted in the image too, by the system and by pip, which otherwise carries its own list.
    return f"""FROM {base}
COPY ca/ /usr/local/share/ca-certificates/
ENV PIP_CERT={CA_FILE} SSL_CERT_FILE={CA_FILE} REQUESTS_CA_BUNDLE={CA_FILE}
RUN update-ca-certificates >/dev/null \\
 && python3 -c 'import sys; assert sys.version.startswith("{spec.python}."), sys.version' \\
 && python3 -m venv {ENV_PREFIX} \\
 && {ENV_PREFIX}/bin/pip install --no-cache-dir --disable-pip-version-check {packages} \\
 && sed -i 's/^include-system-site-packages = false/include-system-site-packages = true/' {ENV_PREFIX}/pyvenv.cfg \\
 && groupmod -n ma-group users \\
 && useradd -u 1000 -g 100 -m -d /home/ma-user -s /bin/bash ma-user \\
 && mkdir -p /home/ma-user/work && chown 1000:100 /home/ma-user/work
ENV PATH={ENV_PREFIX}/bin:/usr/local/bin:/usr/bin:/bin HOME=/home/ma-user LANG=C.UTF-8
USER 1000:100
WORKDIR /home/ma-user/work
CMD ["python", "-m", "jupyter_server"]
"""


def _quote(requirement: str) -> str:
    return "'" + requirement.replace("'", "") + "'"


class DockerImageBuilder:
    """Builds the catalogue's images into the engine; idempotent, keyed by the digest of their inputs."""

    def __init__(
        self,
        client: DockerClient,
        *,
        base_image: str | None = None,
        mirror: str = "http://deb.debian.org/debian",
        scratch: Path | None = None,
        extra_ca_dir: Path = Path("/usr/local/share/ca-certificates"),
    ):
        self.client = client
        self.extra_ca_dir = Path(extra_ca_dir)
        self.base_image = base_image
        self.mirror = mirror
        self.scratch = Path(scratch or tempfile.gettempdir())

    # -- the base ----------------------------------------------------------------------------

    def base(self) -> str:
        """The base image reference, imported from a debootstrapped Debian first if needed."""
        if self.base_image:
            return self.base_image
        digest = _digest(["debootstrap", SUITE, "minbase", "python3,python3-venv,ca-certificates,passwd"])
        reference = f"{BASE_REPOSITORY}:{SUITE}-{digest}"
        if self._exists(reference):
            return reference
        if shutil.which("debootstrap") is None:
            raise ImageBuildError(
                "building the base image needs debootstrap (apt-get install debootstrap), "
                "or set NBFLEET_DOCKER_BASE_IMAGE to an image with Python "
                f"{SUITE_PYTHON}"
            )
        if os.geteuid() != 0:
            raise ImageBuildError(
                "debootstrap needs root to build the base image; run `nbfleet images build` "
                "as root once, or set NBFLEET_DOCKER_BASE_IMAGE"
            )
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="nbfleet-rootfs-", dir=self.scratch) as work:
            rootfs = Path(work) / "rootfs"
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=python3,python3-venv,ca-certificates,passwd",
                    SUITE,
                    str(rootfs),
                    self.mirror,
                ]
            )
            archive = Path(work) / "rootfs.tar"
            _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(archive), "."])
            repository, tag = split_reference(reference)
            self.client.api.import_image(
                src=str(archive), repository=repository, tag=tag, changes=[f'LABEL {LABEL_RECIPE}="{digest}"']
            )
        log.info("base image %s built in %.0f s", reference, time.monotonic() - started)
        return reference

    # -- catalogue images ----------------------------------------------------------------------

    def build(self, swr_path: str, spec: EnvironmentSpec) -> float | None:
        """Build ``swr_path`` from ``spec`` unless an image of the same inputs exists; the seconds it
        took, or None when there was nothing to do."""
        base = self.base()
        text = dockerfile(base, spec)
        authorities = self._authorities()
        digest = _digest([text, self._image_id(base), sorted(authorities.items())])
        if self._recipe_of(swr_path) == digest:
            return None
        started = time.monotonic()
        repository, tag = split_reference(swr_path)
        try:
            # The packages come from the package index: the build needs the host's network even when
            # instances get none.
            _, output = self.client.images.build(
                fileobj=_context(text, authorities),
                custom_context=True,
                tag=f"{repository}:{tag}",
                rm=True,
                forcerm=True,
                network_mode="host",
                labels={LABEL_RECIPE: digest, LABEL_SERVES: "NOTEBOOK,SSH"},
                timeout=BUILD_TIMEOUT,
            )
        except Exception as exc:  # docker.errors.BuildError carries the build's log
            lines = [
                chunk.get("stream", "").strip()
                for chunk in getattr(exc, "build_log", []) or []
                if isinstance(chunk, dict)
            ]
            tail = " | ".join(line for line in lines if line)[-800:]
            raise ImageBuildError(
                f"building {swr_path} failed: {getattr(exc, 'msg', exc)}" + (f"; build log: {tail}" if tail else "")
            ) from None
        return time.monotonic() - started

    def _authorities(self) -> dict[str, str]:
        """The host's own CA certificates: file name -> PEM."""
        try:
            return {p.name: p.read_text() for p in sorted(self.extra_ca_dir.glob("*.crt")) if p.is_file()}
        except OSError:
            return {}

    def _exists(self, reference: str) -> bool:
        return self._image_id(reference) is not None

    def _image_id(self, reference: str) -> str | None:
        from docker.errors import ImageNotFound

        try:
            return self.client.images.get(reference).id
        except ImageNotFound:
            return None

    def _recipe_of(self, reference: str) -> str | None:
        from docker.errors import ImageNotFound

        try:
            return (self.client.images.get(reference).labels or {}).get(LABEL_RECIPE)
        except ImageNotFound:
            return None


class DockerImages:
    """The Docker runtime's ``ImageEngine``.

    An image serves what its ``nbfleet.serves`` label says (the catalogue's images and images saved from
    notebooks carry it; an image from elsewhere needs ``LABEL nbfleet.serves="NOTEBOOK"``): nbfleet never
    runs a caller's image just to find out. Pulls go out without the credentials the engine's client may
    hold, so a caller cannot reach the operator's private registries through a registration. Engine calls
    run in threads of their own, so a hung engine cannot take the threads the reconciler needs.
    """

    def __init__(self, client: DockerClient, container_name: Callable[[str], str], *, threads: int = 4):
        self.client = client
        self.container_name = container_name  # instance id -> its container's name
        self._threads = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="nbfleet-engine")

    async def _call(self, function: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, function, *args)

    async def inspect(self, swr_path: str) -> EngineImage | None:
        return await self._call(self._inspect, swr_path)

    def _inspect(self, swr_path: str) -> EngineImage | None:
        from docker.errors import APIError, ImageNotFound

        try:
            image = self.client.images.get(swr_path)
        except ImageNotFound:
            try:  # a registry reference nbfleet has not pulled yet: anonymously
                repository, tag = split_reference(swr_path)
                image = self.client.images.pull(repository, tag=tag, auth_config={"username": "", "password": ""})
            except APIError:
                return None
        return _engine_image(swr_path, image)

    async def commit(self, spec: InstanceSpec, placement: Placement, swr_path: str) -> EngineImage:
        return await self._call(self._commit, spec, swr_path)

    def _commit(self, spec: InstanceSpec, swr_path: str) -> EngineImage:
        from docker.errors import APIError, NotFound

        try:
            container = self.client.containers.get(self.container_name(spec.id))
            source = self.client.images.get(container.attrs["Config"]["Image"])
            config = source.attrs.get("Config") or {}
            labels = dict(config.get("Labels") or {})
            labels.pop(LABEL_RECIPE, None)
            # The engine merges the container's own configuration into the saved image's: every key of the
            # container's that the image should not keep is named here, emptied (its labels name the
            # instance, its owner and nbfleet's data dir).
            for key in container.labels:
                labels.setdefault(key, "")
            labels[LABEL_SAVED_FROM] = spec.id
            repository, tag = split_reference(swr_path)
            image = container.commit(
                repository=repository,
                tag=tag,
                conf={
                    "Env": config.get("Env"),
                    "Cmd": config.get("Cmd"),
                    "Entrypoint": config.get("Entrypoint"),
                    "User": config.get("User"),
                    "WorkingDir": config.get("WorkingDir"),
                    "Labels": labels,
                },
            )
            image.reload()
        except NotFound:
            raise RuntimeFailure("the instance's container is gone") from None
        except APIError as exc:
            raise RuntimeFailure(f"the engine could not save the image: {exc.explanation or exc}") from None
        return _engine_image(swr_path, image)

    async def remove(self, swr_path: str) -> None:
        await self._call(self._remove, swr_path)

    def _remove(self, swr_path: str) -> None:
        from docker.errors import APIError, ImageNotFound

        try:
            self.client.images.remove(swr_path)
        except ImageNotFound:
            pass
        except APIError as exc:
            raise RuntimeFailure(f"the engine could not remove the image: {exc.explanation or exc}") from None

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


def _engine_image(swr_path: str, image: Image) -> EngineImage:
    serves = (image.labels or {}).get(LABEL_SERVES, "")
    return EngineImage(
        swr_path, size_kb=(image.attrs.get("Size") or 0) // 1024, serves=tuple(s for s in serves.split(",") if s)
    )


def _context(dockerfile_text: str, authorities: dict[str, str]) -> io.BytesIO:
    """The build context: the Dockerfile and a ca/ directory (empty when the host adds no authorities)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        files = {"Dockerfile": dockerfile_text, "ca/.keep": "", **{f"ca/{n}": pem for n, pem in authorities.items()}}
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def _digest(parts: list[Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _run(argv: list[str]) -> None:
    try:
        subprocess.run(
            argv, check=True, capture_output=True, text=True, timeout=BUILD_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except subprocess.CalledProcessError as exc:
        tail = " | ".join(line.strip() for line in (exc.stderr or exc.stdout or "").splitlines() if line.strip())
        raise ImageBuildError(f"{Path(argv[0]).name} failed (exit code {exc.returncode}): {tail[-800:]}") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageBuildError(f"{Path(argv[0]).name} failed: {exc}") from None
