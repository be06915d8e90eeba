"""The Kubernetes runtime: one pod per instance, from the instance's image, through the cluster's API.

Per instance, in one namespace (``kube_namespace``, nbfleet's alone)::

    PersistentVolumeClaim  nb-<id>-work   the work volume (/home/ma-user/work): the volume's capacity (EVS; else
                                          5Gi), ``kube_storage_class``; survives stop/start, goes on delete.
                                          The top object: the two below name it as their owner, so deleting
                                          the claim lets the cluster's garbage collector remove the rest.
    Service                nb-<id>        ClusterIP, port 8888 to the pod's Jupyter: where nbfleet (its proxy,
                                          its probes) reaches the instance; kept across stop/start
    Pod                    nb-<id>        the image's jupyter-server on 0.0.0.0:8888, as ma-user (1000:100)

Every object carries ``app.kubernetes.io/managed-by=nbfleet`` and the instance's, project's and owner's ids
(``nbfleet.io/instance``, ``/project``, ``/owner``), so after a restart the reconciler adopts what runs and
removes what nobody owns.

Choices, and why:

* The official ``kubernetes`` client (maintained by the Kubernetes project; in-cluster and kubeconfig
  loading; watches). Its calls block, so they run in threads of the runtime's own pool (as
  ``asyncio.to_thread`` would, context included): a watch holds its thread for as long as it lasts, and in
  the loop's default executor a few concurrent starts would starve every other ``to_thread`` of nbfleet.
  Requests and answers stay JSON (``_preload_content=False``): the objects are built as the API documents
  them (and validated against its schemas in the tests), and nothing depends on the client's models.
* A bare Pod, not a StatefulSet or Deployment: the reconciler is the controller. A workload controller
  would restart a dead notebook behind its back; here ``restartPolicy: Never``, and a pod that ended is
  reported by ``observe`` (the instance goes to ERROR, as with the other runtimes). As on ModelArts and with
  the docker runtime, every start makes a fresh pod from the image and stop deletes it.
* Hardened pods: non-root (1000:100, fsGroup 100 so the volume is ma-user's), no privilege escalation, no
  capabilities, RuntimeDefault seccomp, no service-account token, no service links (environment variables
  naming the namespace's other services, nbfleet's own among them), and a read-only root filesystem.
  What Jupyter and its owner must write besides the work volume is on emptyDirs: ``/tmp``, and
  ``~/.local``, ``~/.cache``, ``~/.config``, ``~/.jupyter``, ``~/.ipython`` (an emptyDir each, rather than
  subPaths of one, whose directories the kubelet makes itself). Not all of $HOME: images keep things
  there (ModelArts images their conda), which a volume over the home would hide. So ``pip install
  --user`` works and lasts until the instance stops, like a container's layer on the docker runtime;
  writes anywhere else in the image fail.
* The token reaches Jupyter as ``JUPYTER_TOKEN`` in the pod's environment: whoever may read pods in the
  namespace can read it, which is why the namespace should be nbfleet's alone (docs/kubernetes.md).
* Progress: the four steps are scheduling (1), the image pull (2), the container's start with the
  Service's address (3; a pod's status does not tell a finished pull from a started container apart, so 2
  and 3 usually complete together) and Jupyter's ``/api/status`` answering the token through the Service
  (4). The pod is followed by a *watch* (field selector on its name) resumed from its last
  resourceVersion (bookmarks included) whenever the API server ends it, relisting on 410 Gone. Failures
  read from the pod's status: ``Unschedulable`` (PodScheduled false), ``ErrImagePull``/``ImagePullBackOff``
  (and the other image and container-creation reasons), ``OOMKilled`` and any other end of the container,
  an eviction; the reason is the failure's first word, warning events of the pod are added to the events.
  Unschedulable fails the start at once: a cluster whose autoscaler would add a node takes longer
  than a start should wait.
* ``observe`` reads the pod from a background watch of every nbfleet pod of the namespace (label
  selector; listed once, then watched from the list's resourceVersion, resumed the same way, relisting on
  410 Gone), so an observation of many instances costs no request each; until that cache has synced
  (and if its watch fails) it reads the pod itself.
* ``reap_orphans`` lists nbfleet's objects, then asks the store about their instances: the pods of
  instances that are neither running nor in a transition are deleted; claims and Services only of
  instances the store does not hold at all (deleted while nbfleet was down, or a store restored from an
  older backup), since a stopped instance keeps both.
* ``has_capacity`` is always true: the cluster's scheduler decides, and a flavor that cannot be placed
  fails its start with ``Unschedulable``. Flavors may carry ``node_selector`` and ``tolerations``.
* No dynamic mounts (``storage`` is None) and no image engine (``images`` is None): the pod pulls its
  image from a registry the cluster reaches.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..domain.instances import FlavorLimits, InstanceSpec, Placement
from ..domain.model import StepStatus
from .base import (
    Activity,
    DynamicStorage,
    ImageEngine,
    InStore,
    Observation,
    Reporter,
    RuntimeFailure,
    StoreLookup,
)
from .jupyter import JupyterProbe, base_url_for, normal_prefix, server_args
from .steps import failed_start

log = logging.getLogger(__name__)

T = TypeVar("T")
Json = dict[str, Any]

MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_INSTANCE = "nbfleet.io/instance"
LABEL_PROJECT = "nbfleet.io/project"
LABEL_OWNER = "nbfleet.io/owner"
MANAGER = "nbfleet"
CONTAINER = "notebook"
JUPYTER_PORT = 8888
HOME = "/home/ma-user"
WORK = f"{HOME}/work"
UID, GID = 1000, 100
# What Jupyter, IPython and pip write below $HOME (the rest of the image stays read-only).
WRITABLE_HOME = (".local", ".cache", ".config", ".jupyter", ".ipython")
DEFAULT_VOLUME_GB = 5
IMAGE_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONTAINER_FAILURES = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
WATCH_SLICE_S = 30  # a watch asks the server to end it after this long, then resumes
REQUEST_TIMEOUT_S = 15.0


class KubeUnavailable(Exception):
    """No configuration for, or no answer from, the Kubernetes API."""


def api_client(
    config_file: Path | None = None, api_url: str | None = None, *, pool: int = 32, retries: int | None = None
) -> Any:
    """A ``kubernetes.client.ApiClient``: ``config_file``, else the in-cluster service account when running in a
    pod, else ~/.kube/config. ``api_url`` replaces the configuration's server; without ``config_file`` it stands
    alone, with no credentials (``kubectl proxy``, a test server): credentials found elsewhere never go to it."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        if config_file is not None:
            config.load_kube_config(config_file=str(config_file), client_configuration=configuration)
        elif api_url:
            pass
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        elif (Path.home() / ".kube" / "config").is_file():
            config.load_kube_config(client_configuration=configuration)
        else:
            raise KubeUnavailable(
                "no Kubernetes configuration: not in a pod, no ~/.kube/config, and neither NBFLEET_KUBE_CONFIG "
                "nor NBFLEET_KUBE_API_URL given"
            )
    except config.ConfigException as exc:
        raise KubeUnavailable(f"the Kubernetes configuration cannot be loaded: {exc}") from None
    if api_url:
        configuration.host = api_url.rstrip("/")
    configuration.connection_pool_maxsize = pool
    if retries is not None:  # None: urllib3's default (3)
        configuration.retries = retries
    return client.ApiClient(configuration)


def check_reachable(client: Any, namespace: str) -> None:
    """Raise ``KubeUnavailable`` unless the API server lists pods of ``namespace`` for nbfleet."""
    from kubernetes import client as k

    try:
        resp = k.CoreV1Api(client).list_namespaced_pod(
            namespace, limit=1, _preload_content=False, _request_timeout=(3, 10)
        )
        resp.release_conn()
    except Exception as exc:
        raise KubeUnavailable(f"{client.configuration.host}: {api_message(exc)}") from None


def api_message(exc: BaseException) -> str:
    """What went wrong with a call of the API, in one line."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        if not exc.status:
            return f"the Kubernetes API is unreachable ({exc.reason})"
        message = ""
        try:
            message = json.loads(exc.body or "{}").get("message") or ""
        except (ValueError, AttributeError):
            pass
        return f"the Kubernetes API answered {exc.status} {exc.reason}" + (f": {message}" if message else "")
    name = type(exc).__name__
    if name in ("MaxRetryError", "NewConnectionError", "ProtocolError", "ReadTimeoutError") or isinstance(exc, OSError):
        return f"the Kubernetes API is unreachable ({name})"
    return f"{name}: {exc}"


def _status(exc: BaseException) -> int | None:
    from kubernetes.client.exceptions import ApiException

    return exc.status if isinstance(exc, ApiException) else None


# -- the objects --------------------------------------------------------------------------


def pod_name(instance_id: str) -> str:
    return f"nb-{instance_id}"


def service_name(instance_id: str) -> str:
    return f"nb-{instance_id}"


def claim_name(instance_id: str) -> str:
    return f"nb-{instance_id}-work"


def labels(spec: InstanceSpec) -> dict[str, str]:
    return {
        MANAGED_BY: MANAGER,
        LABEL_INSTANCE: spec.id,
        LABEL_PROJECT: spec.project_id,
        LABEL_OWNER: spec.owner_id,
    }


def resources(flavor: FlavorLimits) -> Json:
    """The container's requests and limits: what the flavor grants, requested whole (Guaranteed QoS)."""
    amounts: dict[str, str] = {}
    if flavor.vcpus > 0:
        amounts["cpu"] = str(flavor.vcpus)
    if flavor.memory_mb > 0:
        amounts["memory"] = f"{flavor.memory_mb}Mi"
    if flavor.gpus > 0:
        amounts["nvidia.com/gpu"] = str(flavor.gpus)  # extended resources: requests must equal limits
    return {"requests": dict(amounts), "limits": dict(amounts)}


@dataclass(frozen=True)
class KubeObjects:
    """The manifests of an instance's claim, Service and Pod, as the API takes them."""

    namespace: str = "nbfleet"
    storage_class: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    path_prefix: str | None = None  # as for the other runtimes: None, Jupyter at / (host routing)
    default_volume_gb: int = DEFAULT_VOLUME_GB
    extra_labels: Mapping[str, str] = field(default_factory=dict)

    def _metadata(self, name: str, spec: InstanceSpec, owner: Json | None = None) -> Json:
        metadata: Json = {"name": name, "namespace": self.namespace, "labels": {**self.extra_labels, **labels(spec)}}
        if owner is not None:
            metadata["ownerReferences"] = [owner_reference(owner)]
        return metadata

    def base_url(self, instance_id: str) -> str:
        return base_url_for(normal_prefix(self.path_prefix), instance_id)

    def claim(self, spec: InstanceSpec) -> Json:
        body: Json = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": f"{spec.volume_gb or self.default_volume_gb}Gi"}},
        }
        if self.storage_class:
            body["storageClassName"] = self.storage_class
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": self._metadata(claim_name(spec.id), spec),
            "spec": body,
        }

    def service(self, spec: InstanceSpec, claim: Json) -> Json:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self._metadata(service_name(spec.id), spec, claim),
            "spec": {
                "type": "ClusterIP",
                "selector": {MANAGED_BY: MANAGER, LABEL_INSTANCE: spec.id},
                "ports": [{"name": "jupyter", "port": JUPYTER_PORT, "targetPort": JUPYTER_PORT, "protocol": "TCP"}],
            },
        }

    def pod(self, spec: InstanceSpec, claim: Json) -> Json:
        mounts: list[Json] = [
            {"name": "work", "mountPath": WORK},
            {"name": "tmp", "mountPath": "/tmp"},
            *({"name": _home_volume(d), "mountPath": f"{HOME}/{d}"} for d in WRITABLE_HOME),
        ]
        container: Json = {
            "name": CONTAINER,
            "image": spec.image.swr_path,
            "imagePullPolicy": "IfNotPresent",
            "command": ["python", "-m", "jupyter_server"],
            "args": server_args(port=JUPYTER_PORT, root_dir=WORK, base_url=self.base_url(spec.id)),
            "workingDir": WORK,
            "env": [
                {"name": "JUPYTER_TOKEN", "value": spec.token},
                {"name": "HOME", "value": HOME},
                {"name": "USER", "value": "ma-user"},
                {"name": "JUPYTER_RUNTIME_DIR", "value": "/tmp/.jupyter-runtime"},
                {"name": "PYTHONUNBUFFERED", "value": "1"},
            ],
            "ports": [{"name": "jupyter", "containerPort": JUPYTER_PORT, "protocol": "TCP"}],
            "resources": resources(spec.flavor),
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": UID,
                "runAsGroup": GID,
                "privileged": False,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": mounts,
        }
        pod_spec: Json = {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "hostname": f"notebook-{spec.id[:8]}",
            "terminationGracePeriodSeconds": 10,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": UID,
                "runAsGroup": GID,
                "fsGroup": GID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [
                {"name": "work", "persistentVolumeClaim": {"claimName": claim_name(spec.id)}},
                {"name": "tmp", "emptyDir": {}},
                *({"name": _home_volume(d), "emptyDir": {}} for d in WRITABLE_HOME),
            ],
        }
        if self.image_pull_secrets:
            pod_spec["imagePullSecrets"] = [{"name": name} for name in self.image_pull_secrets]
        if spec.flavor.node_selector:
            pod_spec["nodeSelector"] = dict(spec.flavor.node_selector)
        if spec.flavor.tolerations:
            pod_spec["tolerations"] = [dict(t) for t in spec.flavor.tolerations]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self._metadata(pod_name(spec.id), spec, claim),
            "spec": pod_spec,
        }


def _home_volume(directory: str) -> str:
    return "home-" + directory.lstrip(".")


def owner_reference(owner: Json) -> Json:
    """A reference to ``owner`` (an object the API returned) for the garbage collector. Not
    ``blockOwnerDeletion``: setting it needs the owner's finalizers to be writable, a permission more."""
    return {
        "apiVersion": owner.get("apiVersion", "v1"),
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }


# -- reading a pod ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PodState:
    """What a pod's status says about the instance."""

    exists: bool
    scheduled: bool = False
    node: str | None = None
    started: bool = False  # the container runs (its image is there)
    failure: str | None = None  # why the instance cannot (any longer) come up
    phase: str = ""

    @property
    def alive(self) -> bool:
        return self.exists and self.started and self.failure is None


def pod_state(pod: Json | None, flavor: FlavorLimits | None = None) -> PodState:
    """Read ``pod`` (None: there is none): scheduled where, started, and why it failed if it did."""
    if pod is None:
        return PodState(False, failure="the instance's pod is gone")
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    node = (pod.get("spec") or {}).get("nodeName")
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    scheduled = bool(node) or (conditions.get("PodScheduled") or {}).get("status") == "True"
    container = next(
        (c for c in status.get("containerStatuses") or [] if c.get("name") == CONTAINER),
        None,
    )
    state = (container or {}).get("state") or {}
    running = "running" in state and state["running"] is not None
    terminated = state.get("terminated")
    waiting = state.get("waiting") or {}

    def failed(reason: str) -> PodState:
        return PodState(True, scheduled, node, running or bool(terminated), reason, phase)

    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return failed("the instance's pod is being deleted")
    unschedulable = conditions.get("PodScheduled") or {}
    if unschedulable.get("status") == "False" and unschedulable.get("reason") == "Unschedulable":
        return failed(f"Unschedulable: {unschedulable.get('message') or 'no node can run the pod'}")
    reason = waiting.get("reason") or ""
    if reason in IMAGE_FAILURES:
        image = (container or {}).get("image") or ""
        detail = waiting.get("message") or f"the image {image} cannot be pulled"
        return failed(f"{reason}: {detail}")
    if reason in CONTAINER_FAILURES:
        return failed(f"{reason}: {waiting.get('message') or 'the container cannot be created'}")
    ended = phase in ("Failed", "Succeeded")
    if ended and status.get("reason") and (terminated or {}).get("reason") != "OOMKilled":
        # The kubelet's reason for the whole pod (Evicted, DeadlineExceeded, NodeShutdown …) says more than
        # the exit code 137 of the container it killed for it.
        return failed(f"{status['reason']}: {status.get('message') or 'the pod ended'}")
    if terminated:
        return failed(_ended(terminated, flavor))
    if ended:
        return failed(f"{phase}: {status.get('message') or 'the pod ended'}")
    return PodState(True, scheduled, node, running, None, phase)


def _ended(terminated: Json, flavor: FlavorLimits | None) -> str:
    reason = terminated.get("reason") or "Error"
    code = terminated.get("exitCode")
    if reason == "OOMKilled":
        memory = f" ({flavor.memory_mb} MiB)" if flavor is not None and flavor.memory_mb else ""
        return f"OOMKilled: Jupyter exceeded the flavor's memory{memory}"
    text = f"{reason}: Jupyter exited" + (f" with code {code}" if code is not None else "")
    message = (terminated.get("message") or "").strip()
    return text + (f"; {message[-400:]}" if message else "")


# -- watches -------------------------------------------------------------------------------------


class _Watch:
    """A watch of pods (``selector``: field or label selector) in one of the runtime's threads: listed, then
    watched from the list's resourceVersion; resumed from the last resourceVersion seen (objects and
    bookmarks) whenever the server ends it, listed anew on 410 Gone. On the event loop, ``on_pod(name, pod)``
    gets every pod seen (None: deleted), ``on_list(names)`` the names of every listing, ``on_synced`` whether
    the watch is current (False while it cannot reach the API)."""

    def __init__(
        self,
        runtime: KubernetesRuntime,
        selector: Mapping[str, str],
        on_pod: Callable[[str, Json | None], None],
        on_list: Callable[[set[str]], None] = lambda names: None,
        on_synced: Callable[[bool], None] = lambda synced: None,
        resource_version: str | None = None,
    ):
        self.runtime = runtime
        self.selector = dict(selector)
        self.on_pod = on_pod
        self.on_list = on_list
        self.on_synced = on_synced
        self.loop = asyncio.get_running_loop()
        self.stopping = threading.Event()
        self.resource_version = resource_version
        self._resp: Any = None

    def start(self) -> None:
        self.loop.run_in_executor(self.runtime._pool, self._run)

    def stop(self) -> None:
        self.stopping.set()
        resp = self._resp
        if resp is not None:
            try:  # unblocks the thread's read at once
                resp.shutdown()
            except Exception:
                pass

    def _deliver(self, fn: Callable[..., None], *args: Any) -> None:
        if self.stopping.is_set():
            return
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody listens any more
            self.stopping.set()

    def _list(self) -> None:
        listed = self.runtime._list_pods(self.selector)
        names = set()
        for pod in listed.get("items") or []:
            names.add(pod["metadata"]["name"])
            self._deliver(self.on_pod, pod["metadata"]["name"], pod)
        self._deliver(self.on_list, names)
        self.resource_version = (listed.get("metadata") or {}).get("resourceVersion") or "0"

    def _run(self) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        backoff = 0.2
        while not self.stopping.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                resp = self.runtime._core.list_namespaced_pod(
                    self.runtime.namespace,
                    watch=True,
                    allow_watch_bookmarks=True,
                    resource_version=self.resource_version,
                    timeout_seconds=WATCH_SLICE_S,
                    _preload_content=False,
                    _request_timeout=(5, WATCH_SLICE_S + 10),
                    **self.selector,
                )
                self._resp = resp
                self._deliver(self.on_synced, True)
                try:
                    for line in iter_resp_lines(resp):
                        if self.stopping.is_set():
                            break
                        if line.strip():
                            self._event(json.loads(line))
                            backoff = 0.2
                finally:
                    self._resp = None
                    resp.release_conn()
            except Exception as exc:
                if self.stopping.is_set():
                    break
                if isinstance(exc, _Gone) or _status(exc) == 410:
                    self.resource_version = None  # too old: list anew
                    continue
                log.warning("watching pods (%s): %s", self.selector, api_message(exc))
                self._deliver(self.on_synced, False)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _event(self, event: Json) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = version
        if kind in ("ADDED", "MODIFIED"):
            self._deliver(self.on_pod, obj["metadata"]["name"], obj)
        elif kind == "DELETED":
            self._deliver(self.on_pod, obj["metadata"]["name"], None)


class _Gone(Exception):
    """The watch's resourceVersion is too old (410 Gone)."""


class _PodFollower:
    """The latest state of one pod during a start, with a wake-up at every change."""

    def __init__(self, pod: Json):
        self.name: str = pod["metadata"]["name"]
        self.uid: str | None = pod["metadata"].get("uid")
        self.pod: Json | None = pod
        self.changed = asyncio.Event()

    def update(self, name: str, pod: Json | None) -> None:
        if name == self.name:
            self.pod = pod
            self.changed.set()

    def listed(self, names: set[str]) -> None:
        if self.name not in names:
            self.update(self.name, None)


# -- the runtime -----------------------------------------------------------------------------------


class KubernetesRuntime:
    name = "kubernetes"
    observes = True
    reports_activity = False  # observes already: idle checks run anyway

    def __init__(
        self,
        client: Any,
        *,
        namespace: str = "nbfleet",
        storage_class: str | None = None,
        image_pull_secrets: Iterable[str] = (),
        ready_timeout: float = 300.0,
        stop_grace: int = 10,
        path_prefix: str | None = None,
        threads: int = 32,
        watch_pods: bool = True,
    ):
        """``client``: a ``kubernetes.client.ApiClient`` (``api_client``). ``path_prefix`` as for the other
        runtimes (None: Jupyter at ``/``). ``watch_pods``: keep the background watch ``observe`` reads."""
        from kubernetes import client as k

        self.client = client
        self._core = k.CoreV1Api(client)
        self.namespace = namespace
        self.objects = KubeObjects(
            namespace=namespace,
            storage_class=storage_class,
            image_pull_secrets=tuple(image_pull_secrets),
            path_prefix=path_prefix,
        )
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self.images: ImageEngine | None = None
        self.storage: DynamicStorage | None = None
        self.jupyter = JupyterProbe(self.objects.base_url)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="nbfleet-kube")
        self._watch_pods = watch_pods
        self._cache: dict[str, Json] = {}
        self._cache_synced = False
        self._cache_watch: _Watch | None = None

    def isolation(self) -> dict[str, Any]:
        return {
            "mechanism": "kubernetes",
            "namespace": self.namespace,
            "user": "ma-user (uid 1000, gid 100), non-root",
            "capabilities": "none (no privilege escalation, RuntimeDefault seccomp)",
            "root_filesystem": "read-only; emptyDirs at /tmp and Jupyter's directories in $HOME",
            "service_account_token": "not mounted",
            "network": "the cluster's pod network (restrict it with a NetworkPolicy, docs/kubernetes.md)",
            "limits": "the pod's resources (the node's cgroups)",
        }

    # -- calls ---------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in one of the runtime's threads, with the caller's context (as ``asyncio.to_thread``)."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(context.run, fn, *args))

    def _json(self, method: str, *args: Any, **kwargs: Any) -> Json:
        resp = getattr(self._core, method)(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S, **kwargs)
        try:
            data: Json = json.loads(resp.data or b"{}")
            return data
        finally:
            resp.release_conn()

    def _get(self, kind: str, name: str) -> Json | None:
        try:
            return self._json(f"read_namespaced_{kind}", name, self.namespace)
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise

    def _create(self, kind: str, body: Json) -> Json:
        try:
            return self._json(f"create_namespaced_{kind}", self.namespace, body)
        except Exception as exc:
            if _status(exc) != 409:
                raise
        found = self._get(kind, body["metadata"]["name"])
        if found is None:
            raise RuntimeFailure(f"the {body['kind']} {body['metadata']['name']} exists and does not")
        return found

    def _delete(self, kind: str, name: str, grace: int | None = None) -> bool:
        """Delete; False when there was nothing to delete."""
        options: dict[str, Any] = {"propagation_policy": "Background"}
        if grace is not None:
            options["grace_period_seconds"] = grace
        try:
            self._json(f"delete_namespaced_{kind}", name, self.namespace, **options)
        except Exception as exc:
            if _status(exc) == 404:
                return False
            raise
        return True

    def _list_pods(self, selector: Mapping[str, str]) -> Json:
        return self._json("list_namespaced_pod", self.namespace, **selector)

    def _list(self, kind: str, label_selector: str) -> list[Json]:
        items: list[Json] = (
            self._json(f"list_namespaced_{kind}", self.namespace, label_selector=label_selector).get("items") or []
        )
        return items

    def _wait_gone(self, kind: str, name: str, uid: str | None, deadline: float) -> None:
        """Until the object ``name`` (of ``uid``, if given) no longer exists."""
        while True:
            found = self._get(kind, name)
            if found is None or (uid is not None and found["metadata"].get("uid") != uid):
                return
            if time.monotonic() >= deadline:
                raise RuntimeFailure(f"the {kind.replace('_', ' ')} {name} was not removed in time")
            time.sleep(0.2)

    def _remove_pod(self, instance_id: str, grace: int, timeout: float) -> bool:
        """Delete the instance's pod and wait until it is gone; False when there was none."""
        name = pod_name(instance_id)
        pod = self._get("pod", name)
        if pod is None:
            return False
        self._delete("pod", name, grace)
        self._wait_gone("pod", name, pod["metadata"].get("uid"), time.monotonic() + timeout)
        return True

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, spec: InstanceSpec, reporter: Reporter) -> Placement:
        step = 1
        name = pod_name(spec.id)
        follower: _PodFollower | None = None
        watch: _Watch | None = None
        uid: str | None = None  # of the pod this start made
        started = time.monotonic()
        deadline = started + self.ready_timeout
        try:
            await reporter.step(1, StepStatus.PROCESSING, "Scheduling the instance's pod")
            claim = await self._call(self._ensure_claim, spec, deadline)
            # A start after a crash starts clean: a pod left from before goes first (its name is the same).
            await self._call(self._remove_pod, spec.id, 0, max(deadline - time.monotonic(), 1.0))
            await self._call(self._ensure_service, spec, claim)
            pod = await self._call(self._create, "pod", self.objects.pod(spec, claim))
            uid = pod["metadata"].get("uid")
            follower = _PodFollower(pod)
            watch = _Watch(
                self,
                {"field_selector": f"metadata.name={name}"},
                follower.update,
                on_list=follower.listed,
                resource_version=pod["metadata"].get("resourceVersion"),
            )
            watch.start()

            state = await self._until(follower, spec, lambda s: s.scheduled, deadline, "scheduled", 1)
            size = claim["spec"]["resources"]["requests"]["storage"]
            await reporter.step(
                1, StepStatus.COMPLETED, f"Pod scheduled on {state.node or 'a node'}; work volume {size} at {WORK}"
            )

            step = 2
            await reporter.step(2, StepStatus.PROCESSING, f"Pulling the {spec.image.name} image")
            limits = _describe_limits(spec.flavor)
            await reporter.event("limits", limits)
            await reporter.event(
                "sandbox",
                f"pod in namespace {self.namespace}: ma-user (uid 1000), no capabilities, read-only root filesystem",
            )
            await self._until(follower, spec, lambda s: s.started, deadline, "started", 2)
            await reporter.step(2, StepStatus.COMPLETED, f"{spec.image.name} image ready; {limits}")

            step = 3
            await reporter.step(3, StepStatus.PROCESSING, "Starting the container")
            # The Service as it is now: its address is what the proxy will use (read after the pod runs, so
            # that whatever set it up meanwhile is seen).
            current = await self._call(self._get, "service", service_name(spec.id))
            if current is None:
                raise RuntimeFailure(f"the instance's service {service_name(spec.id)} is gone", 3)
            placement = _placement(current, follower.pod or pod)
            await reporter.step(
                3, StepStatus.COMPLETED, f"Container started; Jupyter reachable at its service {placement.host}"
            )

            step = 4
            await reporter.step(4, StepStatus.PROCESSING, "Starting Jupyter")
            tracked = follower

            def ended() -> str | None:
                return pod_state(tracked.pod, spec.flavor).failure

            await self.jupyter.wait_ready(placement, spec, max(deadline - time.monotonic(), 1.0), ended)
            await reporter.step(4, StepStatus.COMPLETED, f"Jupyter ready in {time.monotonic() - started:.1f} s")
            return placement
        except BaseException as exc:
            try:
                await asyncio.shield(self._after_failure(spec, reporter, uid))
            except Exception:  # the start's own failure is what the user needs to see
                log.exception("instance %s: could not remove the pod of a failed start", spec.id)
            raise await failed_start(exc, step, reporter, spec.id, api_message) from None
        finally:
            if watch is not None:
                watch.stop()

    async def _until(
        self,
        follower: _PodFollower,
        spec: InstanceSpec,
        done: Callable[[PodState], bool],
        deadline: float,
        what: str,
        step: int,
    ) -> PodState:
        """Until ``done(state)`` of the followed pod; its failure, or the deadline, raise ``RuntimeFailure``."""
        while True:
            follower.changed.clear()
            state = pod_state(follower.pod, spec.flavor)
            if done(state):  # even if it failed later on: that failure belongs to a later step
                return state
            if state.failure is not None:
                raise RuntimeFailure(state.failure, step)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                why = f"the pod was not {what} within {self.ready_timeout:g} s ({state.phase})"
                try:
                    warnings = await self._call(self._warnings, follower.name, follower.uid)
                except Exception:
                    warnings = []
                if warnings:
                    why += f"; {warnings[-1].get('reason')}: {warnings[-1].get('message')}"
                raise RuntimeFailure(why[:1000], step)
            try:
                await asyncio.wait_for(follower.changed.wait(), remaining)
            except TimeoutError:
                pass

    async def _after_failure(self, spec: InstanceSpec, reporter: Reporter, uid: str | None) -> None:
        """Leave nothing running; tell the pod's warning events (why it was not scheduled, pulled, run)."""
        events: list[Json] = []
        try:
            events = await self._call(self._warnings, pod_name(spec.id), uid) if uid else []
        except Exception as exc:
            log.warning("instance %s: reading the pod's events failed: %s", spec.id, api_message(exc))
        for event in events[-5:]:
            await reporter.event("kubernetes", f"{event.get('reason')}: {event.get('message')}"[:500])
        await self._call(self._remove_pod, spec.id, 0, 60.0)

    def _warnings(self, name: str, uid: str | None) -> list[Json]:
        """The warning events of the pod ``name`` of ``uid`` (events outlive their pod: an earlier pod of the
        same name has its own)."""
        found = self._json(
            "list_namespaced_event",
            self.namespace,
            field_selector=f"involvedObject.kind=Pod,involvedObject.name={name}",
        )
        return [
            e
            for e in found.get("items") or []
            if e.get("type") == "Warning"
            and (e.get("involvedObject") or {}).get("name") == name
            and (uid is None or (e.get("involvedObject") or {}).get("uid") in (None, "", uid))
        ]

    def _ensure_claim(self, spec: InstanceSpec, deadline: float) -> Json:
        name = claim_name(spec.id)
        claim = self._get("persistent_volume_claim", name)
        if claim is not None and claim["metadata"].get("deletionTimestamp"):
            # Still going from a delete: a new one after it (never the old volume's remains).
            self._wait_gone("persistent_volume_claim", name, claim["metadata"].get("uid"), deadline)
            claim = None
        if claim is None:
            claim = self._create("persistent_volume_claim", self.objects.claim(spec))
        return claim

    def _ensure_service(self, spec: InstanceSpec, claim: Json) -> Json:
        name = service_name(spec.id)
        service = self._get("service", name)
        owners = {o.get("uid") for o in ((service or {}).get("metadata") or {}).get("ownerReferences") or []}
        if service is not None and claim["metadata"]["uid"] not in owners:
            # Owned by an earlier claim of the same name: the garbage collector would remove it.
            self._delete("service", name)
            self._wait_gone("service", name, service["metadata"].get("uid"), time.monotonic() + 30)
            service = None
        if service is None:
            service = self._create("service", self.objects.service(spec, claim))
        return service

    async def stop(self, spec: InstanceSpec, placement: Placement | None) -> None:
        try:
            await self._call(self._remove_pod, spec.id, self.stop_grace, self.stop_grace + 60.0)
        except RuntimeFailure:
            raise
        except Exception as exc:
            raise RuntimeFailure(f"the instance's pod could not be removed: {api_message(exc)}") from None
        self._cache.pop(pod_name(spec.id), None)  # gone: whatever the watch has yet to tell
        await self.jupyter.forget(placement)

    async def delete(self, spec: InstanceSpec, placement: Placement | None) -> None:
        await self.stop(spec, placement)
        try:
            await self._call(self._delete, "service", service_name(spec.id))
            await self._call(self._delete, "persistent_volume_claim", claim_name(spec.id))
        except Exception as exc:
            raise RuntimeFailure(f"the instance's volume could not be removed: {api_message(exc)}") from None

    async def observe(self, spec: InstanceSpec, placement: Placement | None) -> Observation:
        name = pod_name(spec.id)
        self._start_cache()
        if self._cache_synced and pod_state(self._cache.get(name), spec.flavor).alive:
            return Observation(True)
        # Not alive in the cache (or no cache): the pod itself says, since a cache may lag behind a start.
        try:
            pod = await self._call(self._get, "pod", name)
        except Exception as exc:  # not knowing is no reason to call the instance lost
            log.warning("instance %s: reading its pod failed: %s", spec.id, api_message(exc))
            return Observation(True)
        state = pod_state(pod, spec.flavor)
        if state.alive:
            return Observation(True)
        return Observation(False, state.failure or f"the instance's pod is not running ({state.phase})")

    async def adopt(self, spec: InstanceSpec, placement: Placement | None) -> bool:
        if placement is None:
            return False
        try:
            pod = await self._call(self._get, "pod", pod_name(spec.id))
            service = await self._call(self._get, "service", service_name(spec.id))
        except Exception as exc:
            log.warning("instance %s: adopting it failed: %s", spec.id, api_message(exc))
            return False
        if pod is None or service is None or not pod_state(pod, spec.flavor).alive:
            return False
        if (pod.get("metadata") or {}).get("labels", {}).get(LABEL_INSTANCE) != spec.id:
            return False
        current = _placement(service, pod)
        if (current.host, current.port) != (placement.host, placement.port):
            return False  # the proxy would go where the instance no longer is
        return await self.jupyter.answers(placement, spec)

    async def activity(self, spec: InstanceSpec, placement: Placement) -> Activity | None:
        return await self.jupyter.activity(spec, placement)

    async def reap_orphans(self, lookup: StoreLookup) -> list[str]:
        self._start_cache()
        owned = await self._call(self._owned)
        found = {instance for by_instance in owned.values() for instance in by_instance}
        if not found:
            return []
        store = await lookup(found)
        return await self._call(self._reap, owned, store)

    def _owned(self) -> dict[str, dict[str, str]]:
        """nbfleet's pods, Services and claims in the namespace: kind → instance id → object name."""
        owned: dict[str, dict[str, str]] = {}
        for kind in ("pod", "service", "persistent_volume_claim"):
            owned[kind] = {}
            for item in self._list(kind, f"{MANAGED_BY}={MANAGER}"):
                if instance := (item["metadata"].get("labels") or {}).get(LABEL_INSTANCE):
                    owned[kind][instance] = item["metadata"]["name"]
        return owned

    def _reap(self, owned: dict[str, dict[str, str]], store: InStore) -> list[str]:
        """Delete the pods of instances that are not live, and the claims and Services of instances the store
        does not hold at all (a STOPPED instance keeps both: its volume is the user's data)."""
        orphans = set()
        for instance, name in owned["pod"].items():
            if instance not in store.live:
                log.warning("removing the pod of instance %s (not running in the store)", instance)
                self._delete("pod", name, 0)
                orphans.add(instance)
        for kind in ("service", "persistent_volume_claim"):
            for instance, name in owned[kind].items():
                if instance not in store.stored:
                    log.warning("removing the %s of instance %s (not in the store)", kind.replace("_", " "), instance)
                    self._delete(kind, name)
                    orphans.add(instance)
        return sorted(orphans)

    def has_capacity(self, flavor: FlavorLimits) -> bool:
        return True

    # -- the pod cache observe reads ------------------------------------------------------

    def _start_cache(self) -> None:
        if not self._watch_pods or self._cache_watch is not None:
            return
        self._cache_watch = _Watch(
            self, {"label_selector": f"{MANAGED_BY}={MANAGER}"}, self._cached, self._listed, self._synced
        )
        self._cache_watch.start()

    def _cached(self, name: str, pod: Json | None) -> None:
        if pod is None:
            self._cache.pop(name, None)
        else:
            self._cache[name] = pod

    def _listed(self, names: set[str]) -> None:
        for name in set(self._cache) - names:  # a listing: what it did not return is gone
            self._cache.pop(name, None)

    def _synced(self, synced: bool) -> None:
        self._cache_synced = synced

    async def close(self) -> None:
        if self._cache_watch is not None:
            self._cache_watch.stop()
        await self.jupyter.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def _placement(service: Json, pod: Json) -> Placement:
    spec = service.get("spec") or {}
    ports = spec.get("ports") or [{}]
    return Placement(
        host=spec.get("clusterIP") or "",
        port=int(ports[0].get("port") or JUPYTER_PORT),
        details={
            "namespace": pod["metadata"].get("namespace"),
            "pod": pod["metadata"]["name"],
            "service": service["metadata"]["name"],
            "uid": pod["metadata"].get("uid"),
        },
    )


def _describe_limits(flavor: FlavorLimits) -> str:
    gpus = f", {flavor.gpus} nvidia.com/gpu" if flavor.gpus > 0 else ""
    return f"pod resources: memory {flavor.memory_mb} MiB, cpu {flavor.vcpus}{gpus}"
