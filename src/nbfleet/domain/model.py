"""Value types of the notebook domain, spelled as the upstream API spells them."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    INIT = "INIT"
    CREATING = "CREATING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    SNAPSHOTTING = "SNAPSHOTTING"
    DELETING = "DELETING"
    CREATE_FAILED = "CREATE_FAILED"
    START_FAILED = "START_FAILED"
    DELETE_FAILED = "DELETE_FAILED"
    ERROR = "ERROR"
    DELETED = "DELETED"
    FROZEN = "FROZEN"


# Statuses in which the reconciler owes the world some work (SNAPSHOTTING: saving the instance as an image).
TRANSITIONAL = frozenset(
    {Status.INIT, Status.CREATING, Status.STARTING, Status.STOPPING, Status.DELETING, Status.SNAPSHOTTING}
)

# Statuses in which an instance holds compute (the COMPUTE billing item). A stopped or failed
# instance only keeps its storage.
HOLDS_COMPUTE = frozenset(
    {
        Status.INIT,
        Status.CREATING,
        Status.STARTING,
        Status.RUNNING,
        Status.STOPPING,
        Status.SNAPSHOTTING,
        Status.ERROR,
        Status.DELETING,
    }
)


class Feature(StrEnum):
    DEFAULT = "DEFAULT"
    NOTEBOOK = "NOTEBOOK"


class LeaseType(StrEnum):
    TIMING = "TIMING"
    IDLE = "IDLE"


class StepStatus(StrEnum):
    WAITING = "WAITING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class VolumeCategory(StrEnum):
    EVS = "EVS"
    OBS = "OBS"
    OBSFS = "OBSFS"
    EFS = "EFS"


class Ownership(StrEnum):
    MANAGED = "MANAGED"
    DEDICATED = "DEDICATED"


class Billing(StrEnum):
    COMPUTE = "COMPUTE"
    STORAGE = "STORAGE"
    ALL = "ALL"


# The four steps of action_progress during CREATING and STARTING.
STEP_DESCRIPTIONS = {
    1: "Prepare storage",
    2: "Prepare compute resources",
    3: "Configure the network",
    4: "Initialize the instance",
}

DEFAULT_WORKSPACE = "0"
MAIN_MOUNT_PATH = "/home/ma-user/work/"


def billing_items(status: str, volume_category: str | None) -> list[str]:
    """The billing items an instance accrues in a status with a main volume category."""
    items = []
    if status in HOLDS_COMPUTE:
        items.append(Billing.COMPUTE.value)
    if volume_category in (VolumeCategory.EVS, VolumeCategory.EFS):
        items.append(Billing.STORAGE.value)
    return items
