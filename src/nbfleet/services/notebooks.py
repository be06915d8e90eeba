"""Notebook use-cases: create, list, show, update, delete, start, stop, lease, events.

Each call validates, checks the transition table, and records intent with one compare-and-set
in one transaction; the reconciler does the slow work afterwards.
"""

from __future__ import annotations

import builtins
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import orjson

from ..auth.principal import Principal
from ..auth.secrets import SecretBox
from ..domain import errors as E
from ..domain import lease as leases
from ..domain import requests as R
from ..domain.ids import is_instance_id
from ..domain.instances import Placement
from ..domain.model import Feature, Status
from ..domain.query import Page, parse_notebook_query
from ..domain.transitions import Op, check
from ..observability import context
from ..store import identity_repo, image_repo, storage_repo
from ..store import notebook_repo as repo
from ..store.db import Database
from .catalog import Flavor, FlavorCatalog
from .mount_view import volume_json
from .notebook_view import SealedTokens, degraded_notebook_json, initial_progress, lease_json, notebook_json

log = logging.getLogger("nbfleet.notebooks")

UPDATE_A = ("name", "description", "hooks", "dew_secret_name", "public_network_config")
UPDATE_B = ("flavor", "image_id", "endpoints")


class NotebookService:
    def __init__(
        self,
        db: Database,
        clock,
        flavors: FlavorCatalog,
        settings,
        *,
        secrets: SecretBox,
        on_change: Callable[[], None] = lambda: None,
    ):
        self.db = db
        self.tokens = SealedTokens(secrets)
        self.clock = clock
        self.flavors = flavors
        self.settings = settings
        self.limits = settings.lease.limits()
        self.on_change = on_change
        # Sandboxes started ahead of creates (the local runtime's warm pool), or None.
        self.warm: WarmMembers | None = None
        self.addresses = settings.addresses()
        self._domain: tuple[str, str] | None = None

    # --- helpers -----------------------------------------------------------------------------------
    def domain(self) -> tuple[str, str]:
        if self._domain is None:
            with self.db.read() as conn:
                self._domain = (
                    identity_repo.get_meta(conn, "domain_id") or "",
                    identity_repo.get_meta(conn, "domain_name") or "",
                )
        return self._domain

    def render(self, row, principal: Principal, mounts: list | None = None) -> dict:
        """The row's NotebookResp; a row that cannot be rendered is shown degraded (and logged), never
        failing the page or the call that shows it. ``mounts``: its dynamic mounts (read here if None)."""
        try:
            token = self.tokens.open(row["token"]) if row["user_id"] == principal.user_id else None
            if mounts is None:
                with self.db.read() as conn:
                    mounts = storage_repo.of_notebook(conn, row["id"])
            return notebook_json(
                row,
                token=token,
                addresses=self.addresses,
                domain=self.domain(),
                dynamic=[volume_json(m) for m in mounts],
            )
        except Exception:
            log.exception("instance %s cannot be rendered in full; shown degraded", row["id"])
            return degraded_notebook_json(row, addresses=self.addresses, domain=self.domain())

    @staticmethod
    def _visible(conn, principal: Principal, notebook_id: str):
        """The row if the caller may see it; otherwise 6309 (never a hint that it exists)."""
        row = repo.get(conn, notebook_id)
        if (
            row is None
            or row["project_id"] != principal.project_id
            or (not principal.is_admin and row["user_id"] != principal.user_id)
        ):
            raise E.NotebookNotFound()
        return row

    @staticmethod
    def _current(conn, notebook_id: str):
        """The row as it is now, after a lost compare-and-set; 6309 if what won was its deletion."""
        row = repo.get(conn, notebook_id)
        if row is None:
            raise E.NotebookNotFound()
        return row

    def _event(self, conn, row, kind: str, message: str) -> None:
        repo.add_event(conn, row["id"], row["project_id"], self.clock.now_ms(), kind, message)

    def _check_flavor(self, flavor_id: str, feature: Feature) -> Flavor:
        flavor = self.flavors.get(flavor_id)
        if flavor is None:
            raise E.FlavorNotSupported(f"The flavor {flavor_id} is not supported, please check it.")
        if flavor.feature != feature.value:
            raise E.FlavorFeatureMismatch(flavor_id, feature.value)
        if self.flavors.sold_out(flavor):
            raise E.FlavorSoldOut()
        return flavor

    @staticmethod
    def _check_image(conn, principal: Principal, image_id: str, flavor: Flavor | None):
        row = image_repo.get_visible(conn, image_id, principal.project_id, principal.user_id)
        if row is None or row["status"] != "ACTIVE":
            raise E.ImageNotFound(image_id)
        image = image_repo.to_json(row)
        if flavor is not None and flavor.category not in image["resource_categories"]:
            raise E.ImageFlavorMismatch()
        return image

    @staticmethod
    def _check_keypairs(conn, principal: Principal, endpoints: list[dict]) -> None:
        known = None
        for ep in endpoints:
            for name in ep["key_pair_names"]:
                if known is None:
                    known = identity_repo.keypair_names(conn, principal.user_id)
                if name not in known:
                    raise E.KeyPairNotAllowed(name)

    def _admit_start(self, conn) -> None:
        """Refuse with 429 when too many instances are already waiting for the runtime."""
        waiting = repo.count_in_status(conn, (Status.INIT, Status.CREATING, Status.STARTING))
        if waiting >= self.settings.max_pending_starts:
            raise E.SystemBusy()

    # --- create --------------------------------------------------------------------------------------
    def create(self, principal: Principal, body, *, initial: dict | None = None, check_quota: bool = True) -> dict:
        """``initial``: values that replace the new row's; with ``check_quota`` False the owner's instance
        quota does not refuse it (a server started for testing seeds instances so; ``nbfleet.testing``)."""
        shape = R.check_create_shape(body)
        now = self.clock.now_ms()
        warm = _WarmTake(self.warm if not (initial and "id" in initial) else None)
        with warm, self.db.write() as conn:  # warm first: a create that fails gives its member back
            user = identity_repo.get_user(conn, principal.user_id, lock=True)
            if shape.feature is Feature.DEFAULT and repo.count_owned(conn, principal.user_id, Feature.DEFAULT) > 0:
                raise E.InstanceExists()
            if shape.workspace_id != "0" and not identity_repo.workspace_exists(
                conn, shape.workspace_id, principal.project_id
            ):
                raise E.WorkspaceNotFound()
            flavor = self._check_flavor(shape.flavor, shape.feature) if shape.flavor else None
            if shape.pool_id is not None:
                raise E.InvalidProperty("pool_id", f"The pool {shape.pool_id} does not exist.")
            if flavor is None:  # custom_spec only runs in a dedicated pool
                raise E.MissingProperty("pool_id")
            image = self._check_image(conn, principal, shape.image_id, flavor)
            endpoints = R.check_endpoints(body.get("endpoints") or [])
            if "NOTEBOOK" not in image["dev_services"] and not any(ep["service"] == "SSH" for ep in endpoints):
                raise E.SshConfigMissing(image["swr_path"])
            volume = R.check_volume(body["volume"], main=True)
            if volume["category"] not in flavor.storages:
                raise E.StorageCategoryUnsupported()
            data_volumes = [
                R.check_volume(v, main=False, prefix=f"data_volumes[{i}]")
                for i, v in enumerate(body.get("data_volumes") or [])
            ]
            lease_req = R.lease_from_create(body, self.limits)
            self._check_keypairs(conn, principal, endpoints)
            quota = user["instance_quota"] if user["instance_quota"] is not None else self.settings.instance_quota
            if check_quota and quota >= 0 and repo.count_owned(conn, principal.user_id) >= quota:
                raise E.InstanceQuotaReached()
            self._admit_start(conn)
            lease = leases.grant(now, now, lease_req.duration, lease_req.type, self.limits)
            # Last, once nothing can refuse the create: a warm member's id and token, or fresh ones.
            notebook_id, token = warm.take(image["swr_path"], flavor.id) or (str(uuid.uuid4()), None)
            spec = {
                "volume": volume,
                "data_volumes": data_volumes,
                "endpoints": endpoints,
                "image": image,
                "hooks": R.check_hooks(body["hooks"]) if body.get("hooks") else None,
                "public_network_config": R.check_network(body["public_network_config"])
                if body.get("public_network_config")
                else None,
                "affinity": body.get("affinity"),
                "run_user": _run_user(body.get("run_user")),
                "user_vpc": _user_vpc(body.get("user_vpc")),
                "custom_spec": body.get("custom_spec"),
            }
            row = {
                "id": notebook_id,
                "project_id": principal.project_id,
                "user_id": principal.user_id,
                "user_name": principal.user_name,
                "name": shape.name,
                "description": shape.description,
                "status": Status.CREATING.value,
                "desired": Status.RUNNING.value,
                "version": 1,
                "feature": shape.feature.value,
                "workspace_id": shape.workspace_id,
                "flavor": flavor.id,
                "image_id": image["id"],
                "swr_path": image["swr_path"],
                "pool_id": None,
                "pool_name": None,
                "ip": None,
                "volume_category": volume["category"],
                "token": self.tokens.new() if token is None else self.tokens.seal(token),
                "fail_reason": None,
                "action_progress": orjson.dumps(initial_progress()).decode(),
                "lease_type": lease.type.value,
                "lease_duration": lease.duration,
                "lease_enable": lease.enable,
                "lease_update_at": lease.update_at,
                "last_activity_at": None,
                "create_at": now,
                "update_at": now,
                "spec": orjson.dumps(spec).decode(),
                "tags": "[]",
                "placement": None,
                "claim_owner": None,
                "claim_until": None,
                "request_id": context.request_id(),
                **(initial or {}),
            }
            repo.insert_notebook(conn, row)
            context.note_target(row["id"])
            self._event(conn, row, "created", f"Instance created with flavor {flavor.id} and image {image['name']}")
            stored = repo.get(conn, row["id"])
        self.on_change()
        return self.render(stored, principal)

    # --- read --------------------------------------------------------------------------------------
    def get(self, principal: Principal, notebook_id: str) -> dict:
        with self.db.read() as conn:
            return self.render(self._visible(conn, principal, notebook_id), principal)

    def list(self, principal: Principal, params, *, all_view: bool) -> dict:
        query = parse_notebook_query(
            params,
            project_id=principal.project_id,
            caller_id=principal.user_id,
            caller_is_admin=principal.is_admin,
            all_view=all_view,
            strict_limit=self.settings.strict_limit,
        )
        with self.db.read() as conn:
            rows, total = repo.page(conn, query)
            mounts = storage_repo.of_notebooks(conn, [row["id"] for row in rows])  # one query for the page
        data = [self.render(row, principal, mounts[row["id"]]) for row in rows]
        return Page(data, total, query.offset, query.limit).envelope()

    # --- update --------------------------------------------------------------------------------------
    def update(self, principal: Principal, notebook_id: str, body) -> dict:
        changes = R.check_update_shape(body)
        with self.db.write() as conn:
            row = self._visible(conn, principal, notebook_id)
            if not changes:
                return self.render(row, principal)
            status = row["status"]
            if any(k in changes for k in UPDATE_A):
                check(status, Op.UPDATE_A)
            spec_fields = [k for k in UPDATE_B if k in changes]
            if spec_fields:
                try:
                    check(status, Op.UPDATE_B)
                except E.IllegalTransition as exc:
                    if exc.code == "ModelArts.6347":
                        raise E.FieldNotModifiable(status, spec_fields[0]) from None
                    raise
            if "storage_new_size" in changes:
                check(status, Op.UPDATE_C)
            values, spec = self._apply_update(conn, principal, row, changes)
            values["spec"] = orjson.dumps(spec).decode()
            values["update_at"] = self.clock.now_ms()
            if not repo.compare_and_set(conn, notebook_id, row["version"], values):
                self._current(conn, notebook_id)  # 6309 if it was deleted meanwhile
                raise E.IllegalTransition("ModelArts.6357", status, Op.UPDATE_A)
            self._event(conn, row, "updated", "Changed " + ", ".join(sorted(changes)))
            return self.render(repo.get(conn, notebook_id), principal)

    def _apply_update(self, conn, principal, row, changes) -> tuple[dict, dict]:
        spec = orjson.loads(row["spec"])
        values: dict = {}
        for simple in ("name", "description"):
            if simple in changes:
                values[simple] = changes[simple]
        for nested in ("hooks", "public_network_config"):
            if nested in changes:
                spec[nested] = changes[nested]
        if "dew_secret_name" in changes:
            spec["volume"]["dew_secret_name"] = changes["dew_secret_name"]
        flavor = self.flavors.get(row["flavor"])
        if "flavor" in changes and changes["flavor"] != row["flavor"]:
            new = self.flavors.get(changes["flavor"])
            if new is None:
                raise E.FlavorNotSupported(f"The flavor {changes['flavor']} is not supported, please check it.")
            if changes["flavor"] not in {f["id"] for f in self._switchable(row)}:
                raise E.FlavorNotSwitchable(row["id"], changes["flavor"])
            flavor = new
            values["flavor"] = new.id
        if "image_id" in changes:
            image = self._check_image(conn, principal, changes["image_id"], flavor)
            spec["image"] = image
            values["image_id"] = image["id"]
            values["swr_path"] = image["swr_path"]
        if "endpoints" in changes:
            self._check_keypairs(conn, principal, changes["endpoints"])
            spec["endpoints"] = changes["endpoints"]
        if "storage_new_size" in changes:
            volume = spec["volume"]
            if volume["category"] != "EVS":
                raise E.StorageCategoryUnsupported()
            new_size = changes["storage_new_size"]
            if new_size <= volume.get("capacity", R.EVS_MIN_GB) or new_size > R.EVS_MAX_GB:
                raise E.EvsSizeOutOfRange(volume.get("capacity", R.EVS_MIN_GB) + 1, R.EVS_MAX_GB)
            volume["capacity"] = new_size
        return values, spec

    def _switchable(self, row) -> builtins.list[dict]:  # `list` is a method of this class
        """Flavors the instance can change to: same feature, arch, image-compatible, not sold out."""
        current = self.flavors.get(row["flavor"])
        image = orjson.loads(row["spec"])["image"]
        out = []
        for flavor in self.flavors.flavors.values():
            if flavor.id == row["flavor"] or flavor.feature != row["feature"]:
                continue
            if current is not None and flavor.arch != current.arch:
                continue
            if flavor.category not in image["resource_categories"] or self.flavors.sold_out(flavor):
                continue
            out.append(flavor.to_json(False))
        return out

    def switchable_flavors(self, principal: Principal, notebook_id: str, params) -> dict:
        from .catalog import FLAVOR_SORT_KEYS, paged_catalogue

        with self.db.read() as conn:
            row = self._visible(conn, principal, notebook_id)
        return paged_catalogue(self._switchable(row), params, FLAVOR_SORT_KEYS, None, flavors_twice=True)

    # --- lifecycle -----------------------------------------------------------------------------------
    def _transition(
        self, principal: Principal, notebook_id: str, op: Op, build: Callable, kind: str, message: str
    ) -> dict:
        """Check ``op`` against the table and record the new status with one compare-and-set."""
        with self.db.write() as conn:
            row = self._visible(conn, principal, notebook_id)
            target = check(row["status"], op, strict_delete=self.settings.strict_delete)
            assert target is not None  # the operations that come here all change the status
            if op is Op.START:
                self._admit_start(conn)
            values = {
                "status": target.value,
                "update_at": self.clock.now_ms(),
                "request_id": context.request_id(),
                **build(row),
            }
            if not repo.compare_and_set(conn, notebook_id, row["version"], values, bump=True):
                current = self._current(conn, notebook_id)
                check(current["status"], op, strict_delete=self.settings.strict_delete)
                raise E.IllegalTransition("ModelArts.6357", current["status"], op)
            self._event(conn, row, kind, message)
            result = self.render(repo.get(conn, notebook_id), principal)
        self.on_change()
        return result

    def delete(self, principal: Principal, notebook_id: str) -> dict:
        return self._transition(
            principal,
            notebook_id,
            Op.DELETE,
            lambda row: {"desired": "DELETED", "action_progress": None},
            "deleting",
            "Delete requested",
        )

    def stop(self, principal: Principal, notebook_id: str) -> dict:
        return self._transition(
            principal,
            notebook_id,
            Op.STOP,
            lambda row: {"desired": Status.STOPPED.value, "action_progress": None},
            "stopping",
            "Stop requested",
        )

    def start(self, principal: Principal, notebook_id: str, duration: str | None, lease_type: str | None) -> dict:
        request = R.lease_from_query(duration, lease_type, self.limits)
        now = self.clock.now_ms()

        def build(row):
            lease = leases.grant(
                row["create_at"], now, request.duration, request.type, self.limits, previous=leases.lease_of(row)
            )
            return {
                "desired": Status.RUNNING.value,
                "token": self.tokens.new(),
                "fail_reason": None,
                "action_progress": orjson.dumps(initial_progress()).decode(),
                "lease_type": lease.type.value,
                "lease_duration": lease.duration,
                "lease_enable": lease.enable,
                "lease_update_at": lease.update_at,
                "last_activity_at": None,
            }

        return self._transition(principal, notebook_id, Op.START, build, "starting", "Start requested")

    def show_lease(self, principal: Principal, notebook_id: str) -> dict:
        with self.db.read() as conn:
            return lease_json(self._visible(conn, principal, notebook_id))

    def renew_lease(self, principal: Principal, notebook_id: str, duration: str | None, body) -> dict:
        if duration not in (None, ""):
            request = R.lease_from_query(duration, None, self.limits)
        else:
            request = R.lease_from_body(body, self.limits)
        now = self.clock.now_ms()
        with self.db.write() as conn:
            row = self._visible(conn, principal, notebook_id)
            check(row["status"], Op.RUN_ONLY)
            lease = leases.grant(
                row["create_at"], now, request.duration, request.type, self.limits, previous=leases.lease_of(row)
            )
            values = {
                "lease_type": lease.type.value,
                "lease_duration": lease.duration,
                "lease_enable": lease.enable,
                "lease_update_at": lease.update_at,
                "update_at": now,
            }
            if not repo.compare_and_set(conn, notebook_id, row["version"], values):
                self._current(conn, notebook_id)
                raise E.IllegalTransition("ModelArts.6327", row["status"], Op.RUN_ONLY)
            self._event(
                conn,
                row,
                "lease_renewed",
                "Auto-stop disabled"
                if not lease.enable
                else f"Lease renewed: {lease.type.value.lower()} {request.duration // 1000} s from now",
            )
            return lease_json(repo.get(conn, notebook_id))

    def events(self, principal: Principal, notebook_id: str, params) -> dict:
        query = parse_notebook_query(
            {k: v for k, v in params.items() if k in ("limit", "offset", "sort_dir")},
            project_id=principal.project_id,
            caller_id=principal.user_id,
            caller_is_admin=principal.is_admin,
            all_view=False,
        )
        with self.db.read() as conn:
            self._visible(conn, principal, notebook_id)
            rows, total = repo.events_page(conn, notebook_id, query.offset, query.limit, query.descending)
        data = [
            {
                "id": r["id"],
                "notebook_id": r["notebook_id"],
                "type": r["kind"],
                "message": r["message"],
                "create_at": r["at"],
            }
            for r in rows
        ]
        return Page(data, total, query.offset, query.limit).envelope()

    def route(self, notebook_id: str) -> Placement | E.ModelArtsError:
        """Where the notebook proxy sends a request for the instance, or why it cannot (``routing.py``).

        The proxy is authenticated by the instance's own Jupyter token, so no principal is needed.
        """
        with self.db.read() as conn:
            row = repo.get(conn, notebook_id) if is_instance_id(notebook_id) else None
        if row is None or row["status"] not in (Status.RUNNING, Status.SNAPSHOTTING) or not row["placement"]:
            return E.NotebookNotFound(http_status=404)
        placement = Placement.from_column(row["placement"])
        assert placement is not None  # a RUNNING instance has its placement
        if not placement.socket and not placement.port:  # an SSH-only instance: no Jupyter to reach
            return E.NotebookNotFound(http_status=404)
        return placement

    def ssh_access(self, notebook_id: str) -> SshAccess | None:
        """Who may open SSH sessions in the instance and from where, while it runs with an SSH endpoint;
        None otherwise. The SSH gateway authenticates with this, so no principal is needed."""
        with self.db.read() as conn:
            row = repo.get(conn, notebook_id) if is_instance_id(notebook_id) else None
            if row is None or row["status"] not in (Status.RUNNING, Status.SNAPSHOTTING) or not row["placement"]:
                return None
            ssh = [ep for ep in orjson.loads(row["spec"]).get("endpoints") or [] if ep.get("service") == "SSH"]
            if not ssh:
                return None
            names = {name for ep in ssh for name in ep.get("key_pair_names") or []}
            keys = identity_repo.keypairs_named(conn, row["user_id"], names)
        # Several SSH endpoints: any of their addresses; one without a list allows every address.
        networks = (
            None
            if any(not ep.get("allowed_access_ips") for ep in ssh)
            else [ip for ep in ssh for ip in ep["allowed_access_ips"]]
        )
        placement = Placement.from_column(row["placement"])
        assert placement is not None  # a RUNNING instance has its placement
        return SshAccess(notebook_id, placement, [key for _, key in keys], networks)

    def feature_quota(self, principal: Principal) -> dict:
        """The caller's NOTEBOOK feature: whether creating is possible, the quota and what is used."""
        with self.db.read() as conn:
            user = identity_repo.get_user(conn, principal.user_id)
            used = repo.count_owned(conn, principal.user_id)
        quota = user["instance_quota"] if user["instance_quota"] is not None else self.settings.instance_quota
        return {
            "id": f"{principal.user_id}-NOTEBOOK",
            "name": "NOTEBOOK",
            "enabled": True,
            "quota": quota,
            "used": used,
            "user_id": principal.user_id,
            "create_at": user["create_at"],
            "update_at": user["create_at"],
        }


@dataclass(frozen=True)
class SshAccess:
    notebook_id: str
    placement: Placement
    public_keys: list[str]  # OpenSSH public key lines of the key pairs named on the instance
    allowed_networks: list[str] | None  # IPv4 addresses/CIDRs; None: any address


def _run_user(value: dict | None) -> dict | None:
    if not value:
        return None
    return {"uid": value.get("uid"), "gid": value.get("gid"), "user_name": "ma-user", "group_name": "ma-group"}


def _user_vpc(value: dict | None) -> dict | None:
    if not value:
        return None
    out = dict(value)
    out["connect_cidrs"] = ",".join(value.get("connect_cidrs") or [])
    out.setdefault("port_id", [])
    out.setdefault("port_ip", None)
    return out


class WarmMembers(Protocol):
    """Ready sandboxes a create can take over (``runtime.warm_pool.WarmPool``)."""

    def take(self, swr_path: str, flavor_id: str) -> tuple[str, str] | None: ...

    def give_back(self, instance_id: str, token: str) -> None: ...


class _WarmTake:
    """A create's use of the warm pool: what it took goes back if the create fails, the commit included."""

    def __init__(self, members: WarmMembers | None):
        self.members = members
        self.taken: tuple[str, str] | None = None

    def take(self, swr_path: str, flavor_id: str) -> tuple[str, str] | None:
        if self.members is not None:
            self.taken = self.members.take(swr_path, flavor_id)
        return self.taken

    def __enter__(self) -> _WarmTake:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is not None and self.taken is not None and self.members is not None:
            self.members.give_back(*self.taken)
