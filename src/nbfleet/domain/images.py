"""Images as values: statuses, the parts of an image reference, and the rules their names follow
(spec images-flavors-tags-storage.md §2, notebooks.md §3.3)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from enum import StrEnum

from . import errors as E


class ImageStatus(StrEnum):
    INIT = "INIT"  # accepted (a save waits for the reconciler)
    CREATING = "CREATING"  # being saved from a notebook
    ACTIVE = "ACTIVE"  # usable
    CREATE_FAILED = "CREATE_FAILED"  # the save failed (status_message says why)
    ERROR = "ERROR"  # the engine no longer has it (found by sync)
    DELETED = "DELETED"  # never listed nor shown


class ImageType(StrEnum):
    BUILD_IN = "BUILD_IN"
    DEDICATED = "DEDICATED"


class Origin(StrEnum):
    CUSTOMIZE = "CUSTOMIZE"
    IMAGE_SAVE = "IMAGE_SAVE"


class Visibility(StrEnum):
    PRIVATE = "PRIVATE"
    PUBLIC = "PUBLIC"


class Arch(StrEnum):
    X86_64 = "X86_64"
    AARCH64 = "AARCH64"


class ServiceType(StrEnum):
    COMMON = "COMMON"
    INFERENCE = "INFERENCE"
    TRAIN = "TRAIN"
    DEV = "DEV"
    UNKNOWN = "UNKNOWN"


class ResourceCategory(StrEnum):
    CPU = "CPU"
    GPU = "GPU"
    ASCEND = "ASCEND"


class DevService(StrEnum):
    NOTEBOOK = "NOTEBOOK"
    SSH = "SSH"


class FlavorType(StrEnum):
    ASCEND_SNT9 = "ASCEND_SNT9"
    ASCEND_SNT9B = "ASCEND_SNT9B"
    ASCEND_SNT3 = "ASCEND_SNT3"


# Where nbfleet writes the images it saves from notebooks (and names its built-ins).
REGISTRY = "registry.nbfleet.local"

# Lower-case letters, digits, "-", "_" and "."; starting and ending with a letter or digit.
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9])?$")
# Letters, digits, "-", "_" and "."; starting with a lower-case letter.
NAMESPACE_RE = re.compile(r"^[a-z][A-Za-z0-9._-]{0,63}$")
TAG_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
REGISTRY_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?$")
SWR_PATH_MIN, SWR_PATH_MAX = 16, 2048


@dataclass(frozen=True)
class ImageAddress:
    """An image reference ``[registry[:port]/]namespace/name:tag`` taken apart."""

    registry: str | None
    namespace: str
    name: str
    tag: str

    def __str__(self) -> str:
        prefix = f"{self.registry}/" if self.registry else ""
        return f"{prefix}{self.namespace}/{self.name}:{self.tag}"


def check_image_name(name: str, member: str = "name") -> str:
    """An image name: at most 128 lower-case letters, digits, ``- _ .``, alphanumeric at both ends (6336)."""
    if not NAME_RE.fullmatch(name):
        raise E.InvalidProperty(
            member,
            "Use at most 128 lower-case letters, digits, '-', '_' or '.', starting and ending with a letter or digit.",
        )
    return name


def check_namespace(namespace: str, member: str = "namespace") -> str:
    """An organisation: at most 64 letters, digits, ``- _ .``, starting with a lower-case letter (6336)."""
    if not NAMESPACE_RE.fullmatch(namespace):
        raise E.InvalidProperty(
            member, "Use at most 64 letters, digits, '-', '_' or '.', starting with a lower-case letter."
        )
    return namespace


def check_tag(tag: str, member: str = "tag") -> str:
    """An image tag: 1 to 64 letters, digits, ``- _ .`` (6336)."""
    if not TAG_RE.fullmatch(tag):
        raise E.InvalidProperty(member, "Use 1 to 64 letters, digits, '-', '_' or '.'.")
    return tag


def parse_swr_path(text: str) -> ImageAddress:
    """Take ``[registry[:port]/]namespace/name:tag`` apart; anything else is 6336 on ``swr_path``."""

    def bad(detail: str) -> E.InvalidProperty:
        return E.InvalidProperty("swr_path", f"Expected [registry[:port]/]namespace/name:tag; {detail}")

    if not SWR_PATH_MIN <= len(text) <= SWR_PATH_MAX:
        raise bad(f"it must be {SWR_PATH_MIN} to {SWR_PATH_MAX} characters long.")
    if "@" in text:
        raise bad("digests are not supported, name a tag.")
    repository, colon, tag = text.rpartition(":")
    if not colon or "/" in tag:
        raise bad("the tag is missing.")
    parts = repository.split("/")
    if len(parts) == 3:
        registry, namespace, name = parts
        if not REGISTRY_RE.fullmatch(registry):
            raise bad(f"'{registry}' is not a registry host[:port].")
    elif len(parts) == 2:
        registry, (namespace, name) = None, parts
    else:
        raise bad("it has too few or too many '/'-separated parts.")
    for check, value, what in (
        (check_namespace, namespace, "namespace"),
        (check_image_name, name, "name"),
        (check_tag, tag, "tag"),
    ):
        try:
            check(value, "swr_path")
        except E.InvalidProperty:
            raise bad(f"the {what} '{value}' breaks its naming rule.") from None
    return ImageAddress(registry, namespace, name, tag)


def saved_image_address(namespace: str, name: str, tag: str) -> ImageAddress:
    """Where a notebook saved as an image goes: nbfleet's own registry."""
    return ImageAddress(REGISTRY, namespace, name, tag)


def group_id(project_id: str | None, owner_id: str | None, namespace: str, name: str) -> str:
    """The stable id of an image group (one owner's images of one ``namespace/name``; built-ins have no
    project and no owner): derived, so every replica and every restart gives a group the same id."""
    return str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"nbfleet:image-group:{project_id or ''}:{owner_id or ''}:{namespace}/{name}")
    )
