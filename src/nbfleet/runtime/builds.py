"""``nbfleet images build``: the catalogue's images built ahead of time, for the runtime that runs them.

The local runtime builds an image into a Python environment under the image dir; the Docker runtime
builds it into the engine. Either way a build whose inputs did not change finds its result and is instant.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..services.catalog import load_catalogue
from ..services.images import builtin_swr_path
from .environments import EnvironmentSpec, ImageEnvironmentError, ImageEnvironments

if TYPE_CHECKING:
    from ..settings import Settings


class BuildFailed(Exception):
    """An image could not be built; the message names it and says why."""


@dataclass(frozen=True)
class Built:
    name: str
    where: str  # the environment's directory, or the engine image's reference
    seconds: float | None  # None: already built


def catalogue_entries(settings: Settings, name: str | None) -> list[dict[str, Any]]:
    entries = [e for e in load_catalogue(settings.images_file, "images.json") if e.get("environment")]
    if name is not None:
        entries = [e for e in entries if e["name"] == name]
        if not entries:
            raise BuildFailed(f"no image named {name!r} with an environment in the catalogue")
    return entries


def build_images(settings: Settings, name: str | None = None, runtime: str | None = None) -> Iterator[Built]:
    runtime = runtime or settings.runtime
    entries = catalogue_entries(settings, name)
    if runtime == "docker":
        yield from _docker(settings, entries)
    else:
        yield from _environments(settings, entries)


def _environments(settings: Settings, entries: list[dict[str, Any]]) -> Iterator[Built]:
    environments = ImageEnvironments(
        settings.image_root(), pythons=settings.image_pythons, shared=os.geteuid() == 0 and not settings.single_user
    )
    for entry in entries:
        try:
            built, seconds = environments.build(entry["name"], EnvironmentSpec.from_json(entry["environment"]))
        except ImageEnvironmentError as exc:
            raise BuildFailed(f"{entry['name']}: {exc}") from None
        yield Built(entry["name"], str(built.path), seconds)


def _docker(settings: Settings, entries: list[dict[str, Any]]) -> Iterator[Built]:
    from .docker import engine_client
    from .docker_images import DockerImageBuilder, ImageBuildError

    client = engine_client(settings.docker_host)
    builder = DockerImageBuilder(
        client,
        base_image=settings.docker_base_image,
        mirror=settings.docker_debian_mirror,
        scratch=settings.data_dir.resolve() if settings.data_dir.exists() else None,
    )
    try:
        for entry in entries:
            swr_path = builtin_swr_path(entry)
            try:
                seconds = builder.build(swr_path, EnvironmentSpec.from_json(entry["environment"]))
            except (ImageBuildError, ImageEnvironmentError) as exc:
                raise BuildFailed(f"{entry['name']}: {exc}") from None
            yield Built(entry["name"], swr_path, seconds)
    finally:
        client.close()
