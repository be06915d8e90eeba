"""Bulk population of a store with realistic notebooks, for benchmarks and demos.

Rows go in through the store layer (SQLAlchemy Core, executemany in chunks), so every table,
index and trigger the service relies on is populated exactly as it would be by the API.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from sqlalchemy import insert, select

from ..domain.ids import new_id
from . import identity_repo
from .db import Database
from .tables import images, memberships, notebook_tags, notebooks, projects, users
from .tables import workspaces as workspace_table

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
    "quebec romeo sierra tango uniform victor whiskey xray yankee zulu train eval bert resnet llama mnist "
    "cifar forecast churn vision speech graph tabular fraud ranking topic"
).split()
# Stable statuses only: a seeded store gives the reconciler nothing to do.
STATUS_WEIGHTS = (
    ("RUNNING", 25),
    ("STOPPED", 60),
    ("CREATE_FAILED", 4),
    ("START_FAILED", 4),
    ("ERROR", 4),
    ("FROZEN", 3),
)
FLAVORS = ("modelarts.vm.cpu.2u", "modelarts.vm.cpu.4u", "modelarts.vm.cpu.8u")
PER_USER = 100  # instances per user: a non-admin's own list stays small, as in real teams
YEAR_MS = 365 * 86_400_000


WORKSPACE_PREFIX = "seed-workspace-"  # every seeding adds such workspaces: the mark of a seeded store


class AlreadySeeded(Exception):
    """The store was seeded before. The population is generated from a fixed random seed, so a second
    seeding would insert the same notebook ids again; it refuses before writing anything instead."""


@dataclass
class SeedReport:
    instances: int
    projects: int
    users: int
    big_project: str
    big_project_instances: int
    sample_user: dict[str, str]


def seed(
    db: Database,
    *,
    instances: int,
    projects_count: int,
    big_share: float,
    big_project: str,
    now_ms: int,
    seal: Callable[[str], str],
    progress: Callable[[int], None] = lambda n: None,
    rng_seed: int = 7,
) -> SeedReport:
    """Add ``instances`` notebooks over ``projects_count`` projects; ``big_share`` of them in ``big_project``.

    ``seal`` seals each Jupyter token as the service stores it (``SecretBox.seal``)."""
    rng = random.Random(rng_seed)
    with db.read() as conn:
        marked = select(workspace_table.c.id).where(workspace_table.c.name.like(WORKSPACE_PREFIX + "%")).limit(1)
        if conn.execute(marked).first() is not None:
            raise AlreadySeeded("this store was seeded before; seed a new data dir (or an empty database)")
        image_rows = conn.execute(
            select(images.c.id, images.c.swr_path, images.c.doc).where(images.c.project_id.is_(None))
        ).all()
    usable = [
        (i, s, d)
        for i, s, d in image_rows
        if "CPU" in orjson.loads(d)["resource_categories"] and "NOTEBOOK" in orjson.loads(d)["dev_services"]
    ]
    big_n = int(instances * big_share) if projects_count > 1 else instances
    per_project = [big_n] + _split(instances - big_n, projects_count - 1)
    project_ids = [big_project]
    with db.write() as conn:
        for i in range(1, projects_count):
            pid = new_id()
            conn.execute(insert(projects).values(id=pid, name=f"seed-{pid[:8]}-{i}", create_at=now_ms))
            project_ids.append(pid)
    total_users = 0
    done = 0
    sample_user = None
    for project_id, count in zip(project_ids, per_project, strict=True):
        user_ids = []
        with db.write() as conn:
            for _ in range(max(1, -(-count // PER_USER))):
                uid = new_id()
                user_ids.append(uid)
                conn.execute(
                    insert(users).values(
                        id=uid, name=f"user-{uid[:12]}", is_admin=False, instance_quota=-1, create_at=now_ms
                    )
                )
                conn.execute(insert(memberships).values(user_id=uid, project_id=project_id))
        total_users += len(user_ids)
        extra_workspaces = [new_id() for _ in range(2)]
        with db.write() as conn:
            for i, wid in enumerate(extra_workspaces):
                identity_repo.insert_workspace(conn, wid, project_id, f"{WORKSPACE_PREFIX}{i}", now_ms)
        workspaces = ["0"] * 8 + extra_workspaces
        for start in range(0, count, 5000):
            rows, tags = [], []
            for k in range(start, min(count, start + 5000)):
                uid = user_ids[k // PER_USER]
                rows.append(
                    _row(rng, project_id, uid, workspaces, usable, now_ms, seal, first_of_user=k % PER_USER == 0)
                )
                if rng.random() < 0.1:
                    team = rng.choice(WORDS)
                    tags.append({"notebook_id": rows[-1]["id"], "key": "team", "value": team})
                    rows[-1]["tags"] = orjson.dumps([{"key": "team", "value": team}]).decode()
            with db.write() as conn:
                conn.execute(insert(notebooks), rows)
                if tags:
                    conn.execute(insert(notebook_tags), tags)
            done += len(rows)
            progress(done)
        if sample_user is None:
            sample_user = {"user_id": user_ids[0], "project_id": project_id}
    assert sample_user is not None  # the big project is always among them
    return SeedReport(done, projects_count, total_users, big_project, big_n, sample_user)


def _split(n: int, parts: int) -> list[int]:
    if parts <= 0:
        return []
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _row(
    rng: random.Random,
    project_id: str,
    user_id: str,
    workspaces: list[str],
    usable_images,
    now_ms: int,
    seal: Callable[[str], str],
    *,
    first_of_user: bool,
) -> dict:
    status = rng.choices([s for s, _ in STATUS_WEIGHTS], [w for _, w in STATUS_WEIGHTS])[0]
    created = now_ms - rng.randrange(YEAR_MS)
    updated = min(now_ms, created + rng.randrange(30 * 86_400_000))
    image_id, swr_path, doc = rng.choice(usable_images)
    feature = "DEFAULT" if first_of_user and rng.random() < 0.3 else "NOTEBOOK"
    flavor = "modelarts.vm.cpu.free" if feature == "DEFAULT" else rng.choice(FLAVORS)
    name = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{rng.randrange(10**6):06d}"
    description = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 8)))
    image = orjson.loads(doc)
    image.update({"id": image_id, "swr_path": swr_path})
    spec = {
        "volume": {
            "category": "EVS",
            "ownership": "MANAGED",
            "capacity": 5,
            "read_only": False,
            "mount_path": "/home/ma-user/work/",
            "mount_type": "STATIC",
        },
        "data_volumes": [],
        "endpoints": [],
        "image": image,
        "hooks": None,
        "public_network_config": None,
        "affinity": None,
        "run_user": None,
        "user_vpc": None,
        "custom_spec": None,
    }
    running = status == "RUNNING"
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "project_id": project_id,
        "user_id": user_id,
        "user_name": f"user-{user_id[:12]}",
        "name": name,
        "description": description,
        "status": status,
        "desired": "RUNNING" if running else "STOPPED",
        "version": 1,
        "feature": feature,
        "workspace_id": rng.choice(workspaces),
        "flavor": flavor,
        "image_id": image_id,
        "swr_path": swr_path,
        "pool_id": None,
        "pool_name": None,
        "ip": "127.0.0.1" if running else None,
        "volume_category": "EVS",
        "token": seal(str(uuid.UUID(int=rng.getrandbits(128), version=4))),
        "fail_reason": "seeded failure" if status.endswith("FAILED") or status == "ERROR" else None,
        "action_progress": None,
        "lease_type": "TIMING",
        "lease_duration": None,
        "lease_enable": False,
        "lease_update_at": created,
        "last_activity_at": None,
        "create_at": created,
        "update_at": updated,
        "spec": orjson.dumps(spec).decode(),
        "tags": "[]",
        "placement": None,
        "claim_owner": None,
        "claim_until": None,
    }
