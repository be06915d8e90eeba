"""A fake Kubernetes API server, in process, for testing the kubernetes runtime without a cluster.

`FakeKubeApiServer` serves a subset of the core/v1 REST API over HTTP on a free 127.0.0.1 port (starlette and
uvicorn in a background thread), so that the official `kubernetes` client talks to it as to a real
kube-apiserver::

    with FakeKubeApiServer() as fake:
        api = fake.core_v1()                       # kubernetes.client.CoreV1Api, host http://127.0.0.1:PORT
        api.create_namespaced_pod("ns", {...})     # 201, status.phase Pending
        fake.run("ns", "pod")                      # the "kubelet": Scheduled, Pulling, ..., phase Running

Nothing here talks to anything but 127.0.0.1; there is no authentication and no TLS.

What is implemented (core/v1, under /api/v1):

- Pods, Services, PersistentVolumeClaims, ConfigMaps, Secrets and Events: create (POST, 201), get, list,
  replace (PUT), patch (PATCH), delete (DELETE one, and DELETE of a collection with selectors), watch; lists and
  watches both per namespace (/api/v1/namespaces/NS/pods) and across namespaces (/api/v1/pods).
  Namespaces: get, list and create (GET /api/v1/namespaces[/NS], POST); `FakeKubeApiServer(namespaces=None)` (the
  default) lets every namespace exist (so creating one is 409 AlreadyExists), `namespaces=["a", "b"]` makes the
  others 404 (`namespaces "x" not found`) until created (POST or `create_namespace`).
  GET /version answers like a 1.32 server; GET /api/v1/namespaces/NS/pods/NAME/log returns `set_log()`'s text.
  The status subresource (GET, PUT, PATCH .../NAME/status, e.g. `read_namespaced_pod_status`) reads the object and
  changes only its status. `kubeconfig()`/`write_kubeconfig(path)` give a kubeconfig for `load_kube_config`.
  Legacy discovery (/api, /apis, /api/v1) is enough for kubectl (get, describe, delete, run; no Table output, so
  `kubectl get` shows NAME and AGE only). `python -m tests.kube.fake_apiserver --auto-run 0.1 --kubeconfig PATH`
  serves one until SIGINT/SIGTERM, for trying things by hand.
- Errors are `Status` objects with the real reasons and codes: 404 NotFound (`pods "x" not found`),
  409 AlreadyExists (`pods "x" already exists`), 409 Conflict (a PUT or a precondition with a stale
  resourceVersion or uid), 422 Invalid (with details.causes), 400 BadRequest (a malformed selector, a namespace in
  the body that differs from the URL's, an unsupported field selector), 405 MethodNotAllowed, 415 for
  apply patches. The client raises `kubernetes.client.exceptions.ApiException` with `.status` = the code.
- Object metadata: uid (uuid4), resourceVersion (ONE global counter for every kind, as a decimal string; each
  create, update and delete takes the next value), creationTimestamp (RFC 3339, seconds), namespace, generateName.
  `kind` and `apiVersion` are set on objects; list items omit them, as the real server's typed lists do.
- Defaults the real server fills: Pods get spec.restartPolicy Always, dnsPolicy, schedulerName,
  terminationGracePeriodSeconds 30, serviceAccountName default, container imagePullPolicy (Always for :latest or
  no tag, else IfNotPresent), terminationMessagePath/Policy, status {phase: Pending, qosClass}. Services get
  spec.type ClusterIP, spec.clusterIP/clusterIPs from 10.96.0.0/16 (kept if given, "None" for headless), port
  protocol TCP and targetPort = port, nodePorts from 30000 for NodePort/LoadBalancer. PVCs get volumeMode
  Filesystem and, with `bind_pvcs=True` (default), status {phase: Bound, capacity, accessModes} at once plus
  spec.volumeName; with `bind_pvcs=False` they stay Pending until `bind_pvc()`. PVCs get the finalizer
  kubernetes.io/pvc-protection, as the admission plugin adds it (see Deletion). Secrets' stringData is folded into
  base64 data.
- Validation, basic only: names (DNS-1123 subdomain; DNS-1035 label for Services), label keys and values, a Pod
  needs containers with a name and an image, a Service needs ports in 1..65535 (unless headless), a PVC needs
  accessModes and resources.requests.storage. PUT and PATCH of a Pod may change only container images and labels,
  annotations and the like in metadata (other spec changes: 422, as the real "pod updates may not change fields"),
  a Service's clusterIP may not change (422); status in a PUT/PATCH of the main resource is ignored (status is a
  subresource). Patches: application/json-patch+json (RFC 6902; the client's choice for a list body),
  application/merge-patch+json (RFC 7386; pass `_content_type="application/merge-patch+json"`) and
  application/strategic-merge-patch+json (the client's choice for a dict body: a merge patch whose lists in
  MERGE_KEYS, e.g. containers, env, volumes, ports, ownerReferences, merge by their key, finalizers as a set,
  with `$patch: delete|replace`; other directives are ignored and other lists replaced).
- Label selectors: equality (`a=b`, `a==b`, `a!=b`, comma = AND) and set-based (`a in (x,y)`, `a notin (x)`,
  `a`, `!a`), with the real semantics (`a!=b` and `notin` also match objects without the label). Field selectors:
  `=`, `==`, `!=` on metadata.name and metadata.namespace for every kind, plus for Pods spec.nodeName,
  status.phase, spec.restartPolicy, spec.schedulerName, spec.serviceAccountName, status.podIP, and for Events
  involvedObject.{kind,namespace,name,uid,apiVersion,resourceVersion,fieldPath}, reason, type, source,
  reportingComponent; anything else is 400 `field label not supported`, as on a real server.
- Lists: kind `PodList` etc. with metadata.resourceVersion = the current global resourceVersion; items ordered by
  namespace then name. `limit` and `continue` are NOT implemented (everything is returned at once).
- Watches (`?watch=true`, the client's `kubernetes.watch.Watch().stream(api.list_namespaced_pod, ns, ...)`):
  newline-delimited JSON events `{"type": ..., "object": ...}` over a chunked 200 response.
  * resourceVersion unset or "0": synthetic ADDED events for the current matching objects, then every later change.
  * resourceVersion N: exactly the changes with resourceVersion > N, in order (ADDED, MODIFIED, DELETED; a DELETED
    event carries the object with the deletion's resourceVersion).
  * The fake keeps the last `history` changes (default 1000; `compact()` forgets them all). A watch from an N older
    than the oldest kept change gets HTTP 200 and one event `{"type": "ERROR", "object": Status 410 Expired
    "too old resource version: N (M)"}`, as a real apiserver; so does a watch that falls that far behind. The
    client's `Watch.stream` retries once by itself, then raises `ApiException` with status 410 (at once when
    `timeout_seconds` is given, since it does not retry then).
  * With a label or field selector, an object that starts matching arrives as ADDED, one that stops matching as
    DELETED (with its previous content and the new resourceVersion), as the real watch cache does.
  * `allowWatchBookmarks=true`: a BOOKMARK event (`{"kind": "Pod", "apiVersion": "v1", "metadata":
    {"resourceVersion": "N"}}`) every `bookmark_interval` seconds (default 1.0; a real server: about a minute) when
    nothing else was sent; N is a version up to which everything matching was delivered.
  * `timeoutSeconds` ends the stream after that many seconds (default `watch_timeout`, 300 s); stopping the fake
    ends every open watch.
- Deletion: `propagationPolicy` (query or DeleteOptions body) Background (the default), Foreground or Orphan, and
  `preconditions` (uid, resourceVersion). Garbage collection by ownerReferences is done synchronously in the same
  request, when the owner is removed from the store: dependents (any kind in the namespace) whose ownerReferences
  name the owner's uid and that have no other owner still present are deleted too, through the same path as a
  DELETE (so finalizers and graceful Pod termination apply to them), recursively. Background removes the owner
  first, then deletes the dependents; Foreground deletes the dependents first, then removes the owner without
  waiting for dependents that are only Terminating (a real server keeps the owner, with a deletionTimestamp and the
  foregroundDeletion finalizer, until they are gone); Orphan removes the reference from the dependents (MODIFIED)
  and keeps them. The response is 200 with the object (the real server does this for these kinds).
  With `pod_termination_seconds > 0`, deleting a scheduled Pod (without gracePeriodSeconds=0) is graceful: the
  Pod gets deletionTimestamp and deletionGracePeriodSeconds (MODIFIED) and stays, Terminating (so a create of the
  same name is 409 meanwhile), until that many seconds pass or `finish_termination()`; by default (0) Pods go at
  once, as with gracePeriodSeconds=0. Deleting a running Pod records Killing Events. Objects with
  metadata.finalizers are only marked (deletionTimestamp, MODIFIED) until an update removes the last finalizer,
  which removes them (DELETED). A PVC that a Pod (not Succeeded or Failed) mounts stays Terminating until no Pod
  uses it (the pvc-protection controller's job, done synchronously when Pods change).
- Events (core/v1 Event, as the kubelet and the scheduler write them): reason, message, type Normal/Warning,
  involvedObject (kind, namespace, name, uid, apiVersion, resourceVersion, fieldPath), source, count,
  first/lastTimestamp; named NAME.<hex nanoseconds> as the kubelet does (so listed in the order recorded); a repeat
  of the same reason and message for the same object increments count (MODIFIED).
  They stay after their Pod is deleted.

The "kubelet" and "scheduler" side is a Python API on the fake, for tests; each call bumps resourceVersion,
produces watch events and Events, and raises `FakeApiError` (code 404) for a missing Pod and `PodTerminating` (a
FakeApiError, 409) for one being deleted, which nothing starts (policies ignore both): `schedule`,
`unschedulable`, `run`, `set_ready`, `fail_image_pull`, `oom_kill`, `terminate`, `crash_loop`, `evict`,
`set_pod_status`, `bind_pvc`, `finish_termination`, `set_log`. The store: `create`, `get`, `exists`, `objects`,
`delete`, `events_for`, `compact`, `resource_version`; `requests` (every HTTP request, for assertions), `errors`
(exceptions of policies and hooks run in threads). For the runtime's error paths: `inject_failure` (the next
matching requests fail with a given Status: 403 exceeded quota, 429, 500, also on watches), `drop_watches` (every
open watch stream ends, as when an apiserver restarts) and `open_watches` (to wait until a watch is established).
Objects go in and out as plain dicts (copies). Every method is thread-safe; hooks and policies never run under the
store's lock nor on the server's event loop. `auto` is a policy called (in its own thread) for each created Pod,
e.g. `fake.auto = run_after(0.1)`, so that Pods start by themselves (`run_after`, `fail_image_pull_after`,
`unschedulable_after`, `crash_loop_after` below, or any `Callable[[FakeKubeApiServer, dict], None]`).

A real Jupyter behind a running Pod: `on_run(pod, services) -> (host, port) | None` is called by `run()` (and by a
restart after `oom_kill`/`terminate`) in the caller's thread, before the Pod turns Running; `services` are the
Services of the namespace whose selector matches the Pod's labels. A test starts its own jupyter-server there and
returns where it listens. DEVIATION from Kubernetes: the fake then REWRITES the matching Services so that
spec.clusterIP (and clusterIPs) is that host and spec.ports[0].port (and targetPort) is that port (MODIFIED
events), and a Service created later for that Pod gets the address at once; status.podIP becomes the host too.
So a runtime that reaches an instance at `clusterIP:ports[0].port` must read the Service after the Pod is Running
(or watch it). `on_stop(pod)` is called once per `on_run` when that Pod's containers stop, so that the test stops
its process: in the caller's thread for `oom_kill`/`terminate`/`crash_loop`/`evict` (before a restart's new
`on_run`), in a thread of its own when the Pod is removed (a graceful deletion: when it ends), when the Pod was
deleted while `on_run` ran, and by `stop()` for every Pod still up. An exception from `on_run` propagates to the
caller of `run()` (with `auto`: into `errors`) and leaves the Pod in ContainerCreating.

What is NOT implemented: authentication and authorization (every request is allowed), admission (no quotas, no
LimitRanges, no default StorageClass logic, no Pod Security), scheduling and a kubelet of its own (Pods stay
Pending until a test calls the kubelet API or `auto` does), controllers (no Endpoints/EndpointSlices, no
ReplicaSets, no PV provisioning beyond bind_pvcs), the strategic merge patch beyond the above, server-side apply,
exec/attach/port-forward, pagination (`limit` is accepted and everything returned, without `continue`),
`resourceVersionMatch`, `sendInitialEvents`, a watch from a resourceVersion in the future (served as if current),
protobuf/YAML/Table output, aggregated discovery and OpenAPI (so no `kubectl apply` validation), any group other
than core/v1 (no apps/v1, no networking), and field validation beyond the basics above. Admission quotas can be
imitated with `inject_failure`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..threaded_server import ServerThread

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Policy = Callable[["FakeKubeApiServer", Obj], None]
RunHook = Callable[[Obj, list[Obj]], "tuple[str, int] | None"]
StopHook = Callable[[Obj], None]


@dataclass(frozen=True)
class Resource:
    plural: str
    kind: str


RESOURCES = {
    r.plural: r
    for r in (
        Resource("pods", "Pod"),
        Resource("services", "Service"),
        Resource("persistentvolumeclaims", "PersistentVolumeClaim"),
        Resource("configmaps", "ConfigMap"),
        Resource("secrets", "Secret"),
        Resource("events", "Event"),
    )
}

PVC_PROTECTION = "kubernetes.io/pvc-protection"
FIELDS_ALL = {"metadata.name", "metadata.namespace"}
FIELDS = {
    "pods": FIELDS_ALL
    | {
        "spec.nodeName",
        "status.phase",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.podIP",
        "status.nominatedNodeName",
    },
    "events": FIELDS_ALL
    | {f"involvedObject.{f}" for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion")}
    | {"involvedObject.fieldPath", "reason", "type", "source", "reportingComponent"},
    "secrets": FIELDS_ALL | {"type"},
}


# --- errors ----------------------------------------------------------------------------------------------------------


class FakeApiError(Exception):
    """An API error; over HTTP a `Status` object with this code, reason and message."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None):
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


class PodTerminating(FakeApiError):
    """A kubelet or scheduler call for a Pod that is being deleted (policies ignore it, as they ignore 404)."""


def not_found(plural: str, name: str) -> FakeApiError:
    return FakeApiError(404, "NotFound", f'{plural} "{name}" not found', {"name": name, "kind": plural})


def already_exists(plural: str, name: str) -> FakeApiError:
    return FakeApiError(409, "AlreadyExists", f'{plural} "{name}" already exists', {"name": name, "kind": plural})


def conflict(plural: str, name: str, why: str) -> FakeApiError:
    return FakeApiError(
        409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": {why}', {"name": name, "kind": plural}
    )


def bad_request(message: str) -> FakeApiError:
    return FakeApiError(400, "BadRequest", message)


def invalid(kind: str, name: str, causes: list[tuple[str, str]]) -> FakeApiError:
    """422 Invalid; causes are (field, message)."""
    text = ", ".join(f"{field}: {message}" for field, message in causes)
    return FakeApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {text}',
        {
            "name": name,
            "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes],
        },
    )


# --- selectors -------------------------------------------------------------------------------------------------------

_KEY = r"(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE_RE = re.compile(rf"^{_VALUE}$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

Requirement = tuple[str, str, frozenset[str]]  # key, op (=, !=, in, notin, exists, !exists), values


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse a label selector as the apiserver does (equality- and set-based); 400 when malformed."""
    if not text or not text.strip():
        return []
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    reqs: list[Requirement] = []
    for part in parts:
        part = part.strip()
        m = re.fullmatch(rf"(!?)\s*({_KEY})", part)
        if m:
            reqs.append((m.group(2), "!exists" if m.group(1) else "exists", frozenset()))
            continue
        m = re.fullmatch(rf"({_KEY})\s*(==|=|!=)\s*({_VALUE})", part)
        if m:
            op = "!=" if m.group(3) == "!=" else "="
            reqs.append((m.group(1), op, frozenset([m.group(4)])))
            continue
        m = re.fullmatch(rf"({_KEY})\s+(in|notin)\s*\(([^()]*)\)", part)
        if m:
            values = [v.strip() for v in m.group(4).split(",")]
            if all(_LABEL_VALUE_RE.match(v) for v in values):
                reqs.append((m.group(1), m.group(3), frozenset(values)))
                continue
        raise bad_request(f"unable to parse requirement: {part!r} in label selector {text!r}")
    return reqs


def labels_match(reqs: list[Requirement], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, values in reqs:
        present = key in labels
        value = labels.get(key)
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
        if op in ("=", "in") and (not present or value not in values):
            return False
        if op in ("!=", "notin") and present and value in values:
            return False
    return True


def parse_field_selector(text: str | None, plural: str) -> list[tuple[str, bool, str]]:
    """(field, equal?, value) triples; 400 for a field the real server does not index for this kind."""
    if not text or not text.strip():
        return []
    out = []
    allowed = FIELDS.get(plural, FIELDS_ALL)
    for part in text.split(","):
        m = re.fullmatch(r"\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not m:
            raise bad_request(f"invalid selector: {text!r}; can't understand {part!r}")
        if m.group(1) not in allowed:
            raise bad_request(f'field label not supported: {m.group(1)}"')
        out.append((m.group(1), m.group(2) != "!=", m.group(3)))
    return out


def field_value(obj: Obj, path: str) -> str:
    if path == "source":  # Events: the source's component
        return str((obj.get("source") or {}).get("component", ""))
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def fields_match(reqs: list[tuple[str, bool, str]], obj: Obj) -> bool:
    return all((field_value(obj, f) == v) == eq for f, eq, v in reqs)


# --- helpers ---------------------------------------------------------------------------------------------------------


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_bool(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "t")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# The patch merge keys of the core/v1 lists a notebook Pod, Service or PVC has (from the API's
# x-kubernetes-patch-merge-key); lists not named here are replaced by a strategic merge patch, as atomic lists are.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "conditions": "type",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "ports": "containerPort",  # a container's; a Service's ports merge by "port" (below)
}
MERGE_SETS = {"finalizers"}  # lists of scalars merged as sets (x-kubernetes-patch-strategy: merge)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch: a JSON merge patch whose known lists merge by their key (MERGE_KEYS), with
    `$patch: delete` on a list item and `$patch: replace` on a map or list item; other directives
    ($setElementOrder, $retainKeys, $deleteFromPrimitiveList) are ignored."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list) and key in MERGE_KEYS:
            merge_key = MERGE_KEYS[key]
            if key == "ports" and not any(isinstance(p, dict) and "containerPort" in p for p in result[key] + value):
                merge_key = "port"  # a Service's
            result[key] = _merge_list(result[key], value, merge_key)
        elif isinstance(value, list) and isinstance(result.get(key), list) and key in MERGE_SETS:
            result[key] = result[key] + [v for v in value if v not in result[key]]
        else:
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    return result


def _merge_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    merged = [copy.deepcopy(item) for item in current]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            merged.append(copy.deepcopy(item))
            continue
        index = next((i for i, m in enumerate(merged) if isinstance(m, dict) and m.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                merged.pop(index)
        elif index is None:
            merged.append({k: copy.deepcopy(v) for k, v in item.items() if k != "$patch"})
        else:
            merged[index] = strategic_merge_patch(merged[index], item)
    return [m for m in merged if m is not None]


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Any, ops: list[Any]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    doc = copy.deepcopy(doc)

    def parent(parts: list[str]) -> tuple[Any, str]:
        node = doc
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node[p]
        return node, parts[-1]

    def get(parts: list[str]) -> Any:
        node = doc
        for p in parts:
            node = node[int(p)] if isinstance(node, list) else node[p]
        return node

    def remove(parts: list[str]) -> Any:
        node, last = parent(parts)
        return node.pop(int(last)) if isinstance(node, list) else node.pop(last)

    def add(parts: list[str], value: Any) -> None:
        nonlocal doc
        if not parts:
            doc = value
            return
        node, last = parent(parts)
        if isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), value)
        else:
            node[last] = value

    try:
        for op in ops:
            kind, parts = op["op"], _pointer(op["path"])
            if kind == "add":
                add(parts, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(parts)
            elif kind == "replace":
                get(parts)
                remove(parts)
                add(parts, copy.deepcopy(op["value"]))
            elif kind == "move":
                add(parts, remove(_pointer(op["from"])))
            elif kind == "copy":
                add(parts, copy.deepcopy(get(_pointer(op["from"]))))
            elif kind == "test":
                if get(parts) != op["value"]:
                    raise FakeApiError(
                        422,
                        "Invalid",
                        f"the server rejected our request due to an error in our "
                        f"request: testing value {op['path']} failed",
                    )
            else:
                raise bad_request(f"unknown JSON patch operation {kind!r}")
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise FakeApiError(
            422, "Invalid", f"the server rejected our request due to an error in our request: {exc!r}"
        ) from exc
    return doc


def _qos_class(spec: Obj) -> str:
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    resources = [c.get("resources") or {} for c in containers]
    if not any((r.get("requests") or r.get("limits")) for r in resources):
        return "BestEffort"
    for r in resources:
        limits, requests = r.get("limits") or {}, r.get("requests") or {}
        if not ("cpu" in limits and "memory" in limits):
            return "Burstable"
        if any(requests.get(k, limits[k]) != limits[k] for k in ("cpu", "memory")):
            return "Burstable"
    return "Guaranteed"


def _image_tag(image: str) -> str:
    name = image.split("@")[0].rsplit("/", 1)[-1]
    return name.split(":", 1)[1] if ":" in name else ""


def _condition(status: Obj, kind: str, value: bool, reason: str | None = None, message: str | None = None) -> None:
    """Set a Pod condition, keeping lastTransitionTime when the value does not change."""
    conditions = status.setdefault("conditions", [])
    text = "True" if value else "False"
    for c in conditions:
        if c["type"] == kind:
            if c["status"] != text:
                c["lastTransitionTime"] = now_rfc3339()
            c["status"] = text
            break
    else:
        c = {"type": kind, "status": text, "lastProbeTime": None, "lastTransitionTime": now_rfc3339()}
        conditions.append(c)
    for key, v in (("reason", reason), ("message", message)):
        if v is None:
            c.pop(key, None)
        else:
            c[key] = v
    order = ["DisruptionTarget", "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
    conditions.sort(key=lambda c: order.index(c["type"]) if c["type"] in order else len(order))


@dataclass
class Fault:
    """An injected failure (FakeKubeApiServer.inject_failure)."""

    method: str | None
    plural: str | None
    name: str | None
    watch: bool | None
    error: FakeApiError
    times: int

    def matches(self, method: str, plural: str | None, name: str | None, watch: bool) -> bool:
        return (
            self.times != 0
            and self.method in (None, method)
            and self.plural in (None, plural)
            and self.name in (None, name)
            and self.watch in (None, watch)
        )


@dataclass
class Change:
    """One entry of the watch history: a committed create, update or delete."""

    rv: int
    plural: str
    namespace: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Obj | None


# --- the server ------------------------------------------------------------------------------------------------------


class FakeKubeApiServer:
    """The fake API server: an object store with a watch history, an HTTP front end, and the test-side API.

    Every public method is thread-safe. `start()`/`stop()` or a `with` block run the HTTP server.
    """

    def __init__(
        self,
        *,
        namespaces: Iterable[str] | None = None,
        history: int = 1000,
        bookmark_interval: float = 1.0,
        watch_timeout: float = 300.0,
        node_name: str = "fake-node",
        bind_pvcs: bool = True,
        pod_termination_seconds: float = 0.0,
        auto: Policy | None = None,
        on_run: RunHook | None = None,
        on_stop: StopHook | None = None,
    ):
        self.history = history
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.node_name = node_name
        self.bind_pvcs = bind_pvcs
        self.pod_termination_seconds = pod_termination_seconds
        self.auto = auto
        self.on_run = on_run
        self.on_stop = on_stop
        #: Exceptions raised by `auto` policies and hooks run in threads (tests may assert it stays empty).
        self.errors: list[BaseException] = []
        #: Every HTTP request: (method, path with query string).
        self.requests: list[tuple[str, str]] = []

        self._lock = threading.RLock()
        self._namespaces: set[str] | None = set(namespaces) if namespaces is not None else None
        self._namespace_meta: dict[str, Obj] = {}
        self._objects: dict[tuple[str, str, str], Obj] = {}  # (plural, namespace, name) -> object
        self._rv = 100
        self._created: dict[str, int] = {}  # uid -> the resourceVersion of its creation
        self._log: deque[Change] = deque()
        self._compacted = self._rv  # watches from a resourceVersion below this get 410
        self._subscribers: set[Callable[[], None]] = set()
        self._closing = threading.Event()
        self._ips = itertools.count(2)
        self._node_ports = itertools.count(30000)
        self._service_ips = itertools.count(10)
        self._addresses: dict[tuple[str, str], tuple[str, int]] = {}  # (ns, pod) -> on_run's address
        self._running_hooks: set[tuple[str, str, str]] = set()  # (ns, pod, uid) whose on_run ran, for on_stop
        self._logs: dict[tuple[str, str], str] = {}
        self._timers: list[threading.Timer] = []
        self._threads: list[threading.Thread] = []  # policies and hooks running
        self._watch_generation = 0  # drop_watches() ends the watches of older generations
        self._faults: list[Fault] = []
        self._last_event_ns = 0
        self._server: ServerThread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------------------

    def start(self) -> FakeKubeApiServer:
        self._closing.clear()
        self._server = ServerThread(self.app(), lifespan="off")
        self._server.server.config.timeout_graceful_shutdown = 2
        self._server.__enter__()
        return self

    def stop(self) -> None:
        """Stop serving: end the watches, wait (bounded) for policies and hooks in threads, then call on_stop for
        every Pod whose on_run ran and that is still up, so that a test's processes do not outlive the fake."""
        self._closing.set()
        with self._lock:
            self._wake_all()
            timers, threads = list(self._timers), list(self._threads)
        for timer in timers:
            timer.cancel()
        if self._server is not None:
            self._server.__exit__(None, None, None)
            self._server = None
        deadline = time.monotonic() + 30
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = sorted(self._running_hooks)
            self._running_hooks.clear()
            pods = {(ns, name, uid): self._objects.get(("pods", ns, name)) for ns, name, uid in left}
        if self.on_stop is not None:
            for (ns, name, uid), pod in pods.items():
                try:
                    self.on_stop(
                        copy.deepcopy(pod) if pod else {"metadata": {"namespace": ns, "name": name, "uid": uid}}
                    )
                except Exception as exc:
                    log.exception("fake kube-apiserver: on_stop failed")
                    self.errors.append(exc)

    def __enter__(self) -> FakeKubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configuration(self) -> Any:
        """A `kubernetes.client.Configuration` for this server (no auth, no TLS)."""
        from kubernetes import client

        return client.Configuration(host=self.url)

    def api_client(self) -> Any:
        from kubernetes import client

        return client.ApiClient(self.configuration())

    def core_v1(self) -> Any:
        """A `kubernetes.client.CoreV1Api` talking to this server (its own ApiClient)."""
        from kubernetes import client

        return client.CoreV1Api(self.api_client())

    def kubeconfig(self, namespace: str = "default") -> Obj:
        """A kubeconfig (as a dict) for this server: one cluster, one user without credentials, one context."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | os.PathLike[str], namespace: str = "default") -> str:
        """Write kubeconfig() to path (JSON, which is YAML) for `kubernetes.config.load_kube_config(path)`."""
        with open(path, "w") as f:
            json.dump(self.kubeconfig(namespace), f, indent=2)
        return str(path)

    def sleep(self, seconds: float) -> bool:
        """Sleep unless the fake stops meanwhile; False when it stopped (for policies)."""
        return not self._closing.wait(seconds)

    # --- store -------------------------------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion (that of the latest change)."""
        with self._lock:
            return self._rv

    def _commit(self, plural: str, type_: str, obj: Obj, old: Obj | None) -> Obj:
        """Store (or drop, for DELETED) an object under a new resourceVersion and record the change."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        meta = obj["metadata"]
        key = (plural, meta["namespace"], meta["name"])
        if type_ == "DELETED":
            self._objects.pop(key, None)
        else:
            self._objects[key] = obj
        self._log.append(Change(self._rv, plural, meta["namespace"], type_, copy.deepcopy(obj), old))
        while len(self._log) > self.history:
            self._compacted = self._log.popleft().rv
        self._wake_all()
        result = copy.deepcopy(obj)
        if plural == "pods" and type_ != "ADDED":
            self._release_pvcs(meta["namespace"])
        return result

    def _release_pvcs(self, namespace: str) -> None:
        """The pvc-protection controller: a deleted PVC that no Pod uses any more loses its finalizer (and goes)."""
        for key, pvc in list(self._objects.items()):
            if key[0] != "persistentvolumeclaims" or key[1] != namespace:
                continue
            meta = pvc["metadata"]
            if not meta.get("deletionTimestamp") or PVC_PROTECTION not in (meta.get("finalizers") or []):
                continue
            if any(
                (vol.get("persistentVolumeClaim") or {}).get("claimName") == meta["name"]
                and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                for (p, ns, _), pod in self._objects.items()
                if p == "pods" and ns == namespace
                for vol in (pod.get("spec") or {}).get("volumes") or []
            ):
                continue
            updated = copy.deepcopy(pvc)
            updated["metadata"]["finalizers"] = [f for f in meta["finalizers"] if f != PVC_PROTECTION]
            if updated["metadata"]["finalizers"]:
                self._commit(key[0], "MODIFIED", updated, copy.deepcopy(pvc))
            else:
                updated["metadata"].pop("finalizers")
                self._delete_now(key[0], updated, "Background")

    def _wake_all(self) -> None:
        for wake in list(self._subscribers):
            wake()

    def compact(self) -> None:
        """Forget the whole watch history: a watch from any resourceVersion before now gets 410 Expired."""
        with self._lock:
            self._log.clear()
            self._compacted = self._rv
            self._wake_all()

    def _check_namespace(self, namespace: str) -> None:
        if self._namespaces is not None and namespace not in self._namespaces:
            raise not_found("namespaces", namespace)

    def create_namespace(self, name: str) -> None:
        with self._lock:
            if self._namespaces is not None:
                self._namespaces.add(name)

    def _namespace_object(self, name: str) -> Obj:
        meta = self._namespace_meta.setdefault(
            name,
            {
                "name": name,
                "uid": str(uuid.uuid4()),
                "resourceVersion": "1",
                "creationTimestamp": now_rfc3339(),
                "labels": {"kubernetes.io/metadata.name": name},
            },
        )
        return {
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": copy.deepcopy(meta),
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }

    def _raw(self, plural: str, namespace: str, name: str) -> Obj:
        try:
            return self._objects[(plural, namespace, name)]
        except KeyError:
            raise not_found(plural, name) from None

    def get(self, plural: str, namespace: str, name: str) -> Obj:
        """A copy of an object; FakeApiError 404 when there is none."""
        with self._lock:
            return copy.deepcopy(self._raw(plural, namespace, name))

    def exists(self, plural: str, namespace: str, name: str) -> bool:
        with self._lock:
            return (plural, namespace, name) in self._objects

    def objects(
        self,
        plural: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        """Copies of the objects of a kind (in a namespace, or all), ordered by namespace and name."""
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, plural)
        with self._lock:
            found = [
                copy.deepcopy(obj)
                for (p, ns, _), obj in sorted(self._objects.items())
                if p == plural
                and (namespace is None or ns == namespace)
                and labels_match(labels, obj["metadata"].get("labels"))
                and fields_match(fields, obj)
            ]
        return found

    def events_for(self, namespace: str, name: str, kind: str = "Pod") -> list[Obj]:
        """The Events whose involvedObject is this object, in the order they were first recorded."""
        events = [
            e
            for e in self.objects("events", namespace)
            if e["involvedObject"].get("name") == name and e["involvedObject"].get("kind") == kind
        ]
        with self._lock:
            return sorted(events, key=lambda e: self._created.get(e["metadata"]["uid"], 0))

    # --- create ------------------------------------------------------------------------------------------------------

    def create(self, plural: str, namespace: str, body: Obj) -> Obj:
        """Create an object as POST does (defaults, validation, 409); returns the stored object."""
        res = RESOURCES[plural]
        obj = copy.deepcopy(body)
        if not isinstance(obj, dict):
            raise bad_request("the body of the request must be a JSON object")
        meta = obj.get("metadata") or {}
        obj["metadata"] = meta
        if meta.get("namespace") not in (None, "", namespace):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        if body.get("kind") not in (None, "", res.kind):
            raise bad_request(f"the body kind {body.get('kind')!r} does not match the resource {res.kind!r}")
        with self._lock:
            self._check_namespace(namespace)
            if not meta.get("name") and meta.get("generateName"):
                suffix = "".join("bcdfghjklmnpqrstvwxz2456789"[b % 27] for b in uuid.uuid4().bytes[:5])
                meta["name"] = meta["generateName"] + suffix
            name = meta.get("name") or ""
            self._validate(res, obj, name)
            if (plural, namespace, name) in self._objects:
                raise already_exists(plural, name)
            for server_field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
                meta.pop(server_field, None)
            meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339())
            obj = {
                "kind": res.kind,
                "apiVersion": "v1",
                **{k: v for k, v in obj.items() if k not in ("kind", "apiVersion")},
            }
            getattr(self, f"_default_{plural}")(obj)
            created = self._commit(plural, "ADDED", obj, None)
            self._created[created["metadata"]["uid"]] = self._rv
        if plural == "pods" and self.auto is not None:
            self._spawn(self.auto, self, copy.deepcopy(created))
        return created

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        def target() -> None:
            try:
                fn(*args)
            except FakeApiError as exc:
                # The Pod went away (or is going) meanwhile, or the fake is stopping: nothing to do.
                if exc.code != 404 and not isinstance(exc, PodTerminating) and not self._closing.is_set():
                    log.exception("fake kube-apiserver: %r failed", fn)
                    self.errors.append(exc)
            except BaseException as exc:
                log.exception("fake kube-apiserver: %r failed", fn)
                self.errors.append(exc)

        thread = threading.Thread(target=target, daemon=True, name="fake-kube-policy")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _validate(self, res: Resource, obj: Obj, name: str) -> None:
        causes: list[tuple[str, str]] = []
        meta = obj["metadata"]
        if not name:
            causes.append(("metadata.name", "Required value: name or generateName is required"))
        elif res.plural == "services":
            if len(name) > 63 or not _DNS_1035_RE.match(name):
                causes.append(
                    (
                        "metadata.name",
                        f'Invalid value: "{name}": a DNS-1035 label must consist of lower case alphanumeric '
                        "characters or '-', start with an alphabetic character, and end with an alphanumeric "
                        "character",
                    )
                )
        elif len(name) > 253 or not _DNS_SUBDOMAIN_RE.match(name):
            causes.append(
                (
                    "metadata.name",
                    f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
                    "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                )
            )
        for key, value in (meta.get("labels") or {}).items():
            prefix, _, label = key.rpartition("/")
            if (
                not label
                or len(label) > 63
                or not _LABEL_NAME_RE.match(label)
                or (prefix and not _DNS_SUBDOMAIN_RE.match(prefix))
            ):
                causes.append(
                    (
                        "metadata.labels",
                        f'Invalid value: "{key}": name part must consist of alphanumeric '
                        "characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                    )
                )
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE_RE.match(value):
                causes.append(
                    (
                        "metadata.labels",
                        f'Invalid value: "{value}": a valid label must be an empty string '
                        "or consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
                        "an alphanumeric character",
                    )
                )
        spec = obj.get("spec") or {}
        if res.plural == "pods":
            containers = spec.get("containers") or []
            if not containers:
                causes.append(("spec.containers", "Required value"))
            for i, c in enumerate(containers):
                if not c.get("name") or not _DNS_LABEL_RE.match(c["name"]):
                    causes.append((f"spec.containers[{i}].name", f"Invalid value: {c.get('name')!r}"))
                if not c.get("image"):
                    causes.append((f"spec.containers[{i}].image", "Required value"))
        elif res.plural == "services":
            ports = spec.get("ports") or []
            if not ports and spec.get("clusterIP") != "None":
                causes.append(("spec.ports", "Required value"))
            for i, p in enumerate(ports):
                if not isinstance(p.get("port"), int) or not 1 <= p["port"] <= 65535:
                    causes.append(
                        (
                            f"spec.ports[{i}].port",
                            f"Invalid value: {p.get('port')!r}: must be between 1 and 65535, inclusive",
                        )
                    )
        elif res.plural == "persistentvolumeclaims":
            if not spec.get("accessModes"):
                causes.append(("spec.accessModes", "Required value: at least 1 access mode is required"))
            if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
                causes.append(("spec.resources[storage]", "Required value"))
        if causes:
            raise invalid(res.kind, name, causes)

    def _default_pods(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("securityContext", {})
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault(
            "tolerations",
            [
                {
                    "key": f"node.kubernetes.io/{t}",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
                for t in ("not-ready", "unreachable")
            ],
        )
        for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
            c.setdefault("imagePullPolicy", "Always" if _image_tag(c["image"]) in ("", "latest") else "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
            for p in c.get("ports") or []:
                p.setdefault("protocol", "TCP")
        obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}

    def _default_services(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        if not spec.get("clusterIP"):
            n = next(self._service_ips)
            spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
        spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p["port"])
            if spec["type"] in ("NodePort", "LoadBalancer"):
                p.setdefault("nodePort", next(self._node_ports))
        obj["status"] = {"loadBalancer": {}}
        # A Service created for a Pod that on_run already placed gets that address at once.
        selector = spec.get("selector") or {}
        if selector and spec["clusterIP"] != "None":
            for (ns, pod_name), address in self._addresses.items():
                pod = self._objects.get(("pods", ns, pod_name))
                if ns == obj["metadata"]["namespace"] and pod and self._selects(selector, pod):
                    self._point(spec, address)
                    break

    def _default_persistentvolumeclaims(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("volumeMode", "Filesystem")
        finalizers = obj["metadata"].setdefault("finalizers", [])
        if PVC_PROTECTION not in finalizers:  # as the StorageObjectInUseProtection admission plugin does
            finalizers.append(PVC_PROTECTION)
        obj["status"] = {"phase": "Pending"}
        if self.bind_pvcs:
            self._bind(obj)

    def _bind(self, obj: Obj) -> None:
        spec = obj["spec"]
        spec.setdefault("volumeName", f"pvc-{obj['metadata']['uid']}")
        obj["status"] = {
            "phase": "Bound",
            "accessModes": list(spec.get("accessModes") or []),
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
        }

    def _default_configmaps(self, obj: Obj) -> None:
        pass

    def _default_secrets(self, obj: Obj) -> None:
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None) or {}
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(value.encode()).decode()

    def _default_events(self, obj: Obj) -> None:
        obj.setdefault("involvedObject", {})
        obj.setdefault("count", 1)

    # --- update ------------------------------------------------------------------------------------------------------

    def replace(self, plural: str, namespace: str, name: str, body: Obj) -> Obj:
        """PUT: replace spec and metadata (status kept); 409 Conflict when metadata.resourceVersion is stale."""
        with self._lock:
            current = self._raw(plural, namespace, name)
            meta = body.get("metadata") or {}
            if meta.get("name") not in (None, name):
                raise bad_request("the name of the object does not match the name on the URL")
            if meta.get("namespace") not in (None, "", namespace):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            rv = meta.get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                raise conflict(
                    plural,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                )
            return self._update_from_client(plural, current, copy.deepcopy(body))

    def patch(self, plural: str, namespace: str, name: str, patch: Any, content_type: str) -> Obj:
        """PATCH with application/merge-patch+json, application/json-patch+json or (as merge patch)
        application/strategic-merge-patch+json."""
        with self._lock:
            current = self._raw(plural, namespace, name)
            updated = self._apply_patch(current, patch, content_type)
            rv = (patch if isinstance(patch, dict) else {}).get("metadata", {}) or {}
            if rv.get("resourceVersion") and rv["resourceVersion"] != current["metadata"]["resourceVersion"]:
                raise conflict(
                    plural,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                )
            return self._update_from_client(plural, current, updated)

    @staticmethod
    def _apply_patch(current: Obj, patch: Any, content_type: str) -> Obj:
        if "json-patch" in content_type:
            if not isinstance(patch, list):
                raise bad_request(
                    "json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp "
                    "(a JSON patch is a list of operations)"
                )
            result = json_patch(current, patch)
        elif "merge-patch" in content_type:
            if not isinstance(patch, dict):
                raise bad_request("a merge patch must be a JSON object")
            strategic = "strategic" in content_type
            result = strategic_merge_patch(current, patch) if strategic else merge_patch(current, patch)
        else:
            raise FakeApiError(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}"
            )
        if not isinstance(result, dict):
            raise FakeApiError(422, "Invalid", "the patch does not leave an object")
        return result

    def _update_from_client(self, plural: str, current: Obj, new: Obj) -> Obj:
        res = RESOURCES[plural]
        meta = current["metadata"]
        new_meta = new.get("metadata") or {}
        # Server-owned metadata stays; the client owns labels, annotations, ownerReferences, finalizers.
        merged_meta = {
            **{k: v for k, v in new_meta.items() if k not in ("name", "namespace", "uid", "creationTimestamp")},
            **{k: meta[k] for k in ("name", "namespace", "uid", "creationTimestamp") if k in meta},
        }
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            merged_meta.pop(k, None)
            if k in meta:
                merged_meta[k] = meta[k]
        updated = {k: v for k, v in new.items() if k not in ("metadata", "status", "kind", "apiVersion")}
        updated = {"kind": res.kind, "apiVersion": "v1", "metadata": merged_meta, **updated}
        if "status" in current:
            updated["status"] = copy.deepcopy(current["status"])
        if plural == "secrets":
            self._default_secrets(updated)
        causes: list[tuple[str, str]] = []
        if plural == "pods":
            old_spec, new_spec = copy.deepcopy(current.get("spec") or {}), copy.deepcopy(updated.get("spec") or {})
            for spec in (old_spec, new_spec):
                for c in spec.get("containers") or []:
                    c.pop("image", None)
            if old_spec != new_spec:
                causes.append(
                    (
                        "spec",
                        "Forbidden: pod updates may not change fields other than "
                        "`spec.containers[*].image`, `spec.initContainers[*].image`, "
                        "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing "
                        "tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it "
                        "was previously negative)",
                    )
                )
        if plural == "services":
            old_ip = (current.get("spec") or {}).get("clusterIP")
            new_spec = updated.setdefault("spec", {})
            if new_spec.get("clusterIP") in (None, ""):
                new_spec["clusterIP"] = old_ip
                new_spec["clusterIPs"] = [old_ip]
            elif new_spec["clusterIP"] != old_ip:
                causes.append(
                    ("spec.clusterIPs[0]", f'Invalid value: "{new_spec["clusterIP"]}": may not change once set')
                )
        if causes:
            raise invalid(res.kind, meta["name"], causes)
        self._validate(res, updated, meta["name"])
        if updated == current:
            return copy.deepcopy(current)  # a no-op update does not bump resourceVersion
        old = copy.deepcopy(current)
        if (
            merged_meta.get("deletionTimestamp")
            and not merged_meta.get("finalizers")
            and (plural != "pods" or ("pods", meta["namespace"], meta["name"]) not in self._terminating)
        ):
            updated["metadata"]["resourceVersion"] = meta["resourceVersion"]
            return self._delete_now(plural, updated, "Background")  # the last finalizer gone: DELETED at once
        return self._commit(plural, "MODIFIED", updated, old)

    def _update(self, plural: str, namespace: str, name: str, fn: Callable[[Obj], None], uid: str | None = None) -> Obj:
        """Apply fn to a copy of an object and commit it (MODIFIED) if it changed; the test-side write path."""
        with self._lock:
            current = self._raw(plural, namespace, name)
            if uid is not None and current["metadata"]["uid"] != uid:
                raise not_found(plural, name)
            updated = copy.deepcopy(current)
            fn(updated)
            if updated == current:
                return copy.deepcopy(current)
            return self._commit(plural, "MODIFIED", updated, copy.deepcopy(current))

    # --- delete ------------------------------------------------------------------------------------------------------

    @property
    def _terminating(self) -> set[tuple[str, str, str]]:
        return {
            ("pods", ns, name)
            for (p, ns, name), obj in self._objects.items()
            if p == "pods" and obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers")
        }

    def delete(
        self,
        plural: str,
        namespace: str,
        name: str,
        *,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
        preconditions: Obj | None = None,
    ) -> Obj:
        """DELETE one object (with garbage collection of its dependents); returns the object."""
        policy = propagation_policy or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise bad_request(f"propagationPolicy: Unsupported value: {policy!r}")
        with self._lock:
            obj = self._raw(plural, namespace, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
                raise conflict(
                    plural,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                    f"object meta: {obj['metadata']['uid']}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise conflict(
                    plural,
                    name,
                    "Precondition failed: ResourceVersion in precondition: "
                    f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                    f"{obj['metadata']['resourceVersion']}",
                )
            meta = obj["metadata"]
            if plural == "pods" and not meta.get("deletionTimestamp"):
                for cs in (obj.get("status") or {}).get("containerStatuses") or []:
                    if "running" in cs.get("state", {}):
                        self._event(
                            obj,
                            "Killing",
                            f"Stopping container {cs['name']}",
                            field_path=f"spec.containers{{{cs['name']}}}",
                        )
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return copy.deepcopy(obj)
                marked = self._update(
                    plural,
                    namespace,
                    name,
                    lambda o: o["metadata"].update(deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0),
                )
                if plural == "persistentvolumeclaims":
                    self._release_pvcs(namespace)
                return marked
            graceful = (
                plural == "pods"
                and self.pod_termination_seconds > 0
                and grace_period_seconds != 0
                and (obj.get("spec") or {}).get("nodeName")
            )
            if graceful:
                if meta.get("deletionTimestamp"):
                    return copy.deepcopy(obj)
                grace = (
                    grace_period_seconds
                    if grace_period_seconds is not None
                    else (obj["spec"].get("terminationGracePeriodSeconds", 30))
                )
                deadline = datetime.now(UTC) + timedelta(seconds=grace)

                def mark(o: Obj) -> None:
                    o["metadata"]["deletionTimestamp"] = deadline.strftime("%Y-%m-%dT%H:%M:%SZ")
                    o["metadata"]["deletionGracePeriodSeconds"] = grace

                marked = self._update(plural, namespace, name, mark)
                timer = threading.Timer(
                    self.pod_termination_seconds, self._finish_quietly, (namespace, name, meta["uid"], policy)
                )
                timer.daemon = True
                self._timers.append(timer)
                timer.start()
                return marked
            return self._delete_now(plural, obj, policy)

    def _finish_quietly(self, namespace: str, name: str, uid: str, policy: str) -> None:
        try:
            self.finish_termination(namespace, name, uid=uid, propagation_policy=policy)
        except FakeApiError:
            pass

    def finish_termination(
        self, namespace: str, name: str, *, uid: str | None = None, propagation_policy: str = "Background"
    ) -> Obj:
        """The kubelet confirms that a Terminating Pod's containers are gone: the Pod is removed (DELETED)."""
        with self._lock:
            obj = self._raw("pods", namespace, name)
            if uid is not None and obj["metadata"]["uid"] != uid:
                raise not_found("pods", name)
            if not obj["metadata"].get("deletionTimestamp"):
                raise FakeApiError(400, "BadRequest", f'pods "{name}" is not terminating')
            return self._delete_now("pods", obj, propagation_policy)

    def _delete_now(self, plural: str, obj: Obj, policy: str) -> Obj:
        meta = obj["metadata"]
        namespace, uid = meta["namespace"], meta["uid"]
        dependents = [
            (p, o)
            for (p, ns, _), o in sorted(self._objects.items())
            if ns == namespace and any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
        ]
        if policy == "Orphan":

            def drop(o: Obj) -> None:
                refs = [r for r in o["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
                if refs:
                    o["metadata"]["ownerReferences"] = refs
                else:
                    o["metadata"].pop("ownerReferences", None)

            for p, dep in dependents:
                self._update(p, namespace, dep["metadata"]["name"], drop)
            dependents = []
        if policy == "Foreground":
            self._collect(dependents, uid, policy)
        deleted = self._commit(plural, "DELETED", copy.deepcopy(obj), copy.deepcopy(obj))
        if plural == "pods":
            self._pod_gone(namespace, meta["name"], uid, deleted)
        if policy == "Background":
            self._collect(dependents, uid, policy)
        return deleted

    def _collect(self, dependents: list[tuple[str, Obj]], owner_uid: str, policy: str) -> None:
        """Garbage-collect the dependents of a deleted owner that have no other live owner."""
        live_uids = {o["metadata"]["uid"] for o in self._objects.values()}
        for plural, dep in dependents:
            key = (plural, dep["metadata"]["namespace"], dep["metadata"]["name"])
            current = self._objects.get(key)
            if current is None or current["metadata"]["uid"] != dep["metadata"]["uid"]:
                continue
            others = [
                r
                for r in current["metadata"].get("ownerReferences") or []
                if r.get("uid") != owner_uid and r.get("uid") in live_uids
            ]
            if not others:
                try:  # the whole DELETE path: finalizers hold it, Pods terminate gracefully (as the real GC's calls)
                    self.delete(
                        plural, key[1], key[2], propagation_policy="Background" if policy == "Orphan" else policy
                    )
                except FakeApiError:
                    pass

    def _pod_gone(self, namespace: str, name: str, uid: str, pod: Obj) -> None:
        self._addresses.pop((namespace, name), None)
        if self._take_running_hook(namespace, name, uid) and self.on_stop is not None:
            self._spawn(self.on_stop, copy.deepcopy(pod))  # not under the lock, not on the server's event loop

    def _take_running_hook(self, namespace: str, name: str, uid: str) -> bool:
        """Whether on_run ran for this Pod and on_stop is due (at most once per on_run)."""
        with self._lock:
            key = (namespace, name, uid)
            if key not in self._running_hooks:
                return False
            self._running_hooks.discard(key)
            return True

    def delete_collection(
        self,
        plural: str,
        namespace: str,
        label_selector: str | None = None,
        field_selector: str | None = None,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> list[Obj]:
        """DELETE of a collection: each matching object as by delete(); returns them."""
        deleted = []
        for obj in self.objects(plural, namespace, label_selector, field_selector):
            try:
                deleted.append(
                    self.delete(
                        plural,
                        namespace,
                        obj["metadata"]["name"],
                        propagation_policy=propagation_policy,
                        grace_period_seconds=grace_period_seconds,
                    )
                )
            except FakeApiError as exc:
                if exc.code != 404:
                    raise
        return deleted

    # --- the kubelet and the scheduler -------------------------------------------------------------------------------

    def _event(
        self,
        obj: Obj,
        reason: str,
        message: str,
        type_: str = "Normal",
        component: str = "kubelet",
        field_path: str | None = None,
    ) -> None:
        """Record an Event about obj as the kubelet or the scheduler would (a repeat increments count)."""
        meta = obj["metadata"]
        namespace = meta["namespace"]
        with self._lock:
            for key, existing in self._objects.items():
                inv = existing.get("involvedObject") or {}
                if (
                    key[0] == "events"
                    and key[1] == namespace
                    and inv.get("uid") == meta["uid"]
                    and existing.get("reason") == reason
                    and existing.get("message") == message
                ):

                    def again(e: Obj) -> None:
                        e["count"] = e.get("count", 1) + 1
                        e["lastTimestamp"] = now_rfc3339()

                    self._update("events", namespace, key[2], again)
                    return
            stamp = now_rfc3339()
            involved: Obj = {
                "kind": obj.get("kind", "Pod"),
                "namespace": namespace,
                "name": meta["name"],
                "uid": meta["uid"],
                "apiVersion": "v1",
                "resourceVersion": meta.get("resourceVersion", ""),
            }
            if field_path:
                involved["fieldPath"] = field_path
            source: Obj = {"component": component}
            if component == "kubelet":
                source["host"] = (obj.get("spec") or {}).get("nodeName") or self.node_name
            event = {
                "metadata": {"name": f"{meta['name']}.{self._event_suffix()}", "namespace": namespace},
                "involvedObject": involved,
                "reason": reason,
                "message": message,
                "source": source,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
                "type": type_,
                "eventTime": None,
                "reportingComponent": component,
                "reportingInstance": source.get("host", ""),
            }
            self.create("events", namespace, event)

    def _event_suffix(self) -> str:
        """As the kubelet names Events: the hex of the time in nanoseconds (unique and increasing here)."""
        with self._lock:
            self._last_event_ns = max(time.time_ns(), self._last_event_ns + 1)
            return f"{self._last_event_ns:x}"

    def _pod(self, namespace: str, name: str) -> Obj:
        return self.get("pods", namespace, name)

    def _live_pod(self, namespace: str, name: str) -> Obj:
        """The Pod, unless it is being deleted: nothing starts a Terminating Pod (PodTerminating, a 409)."""
        pod = self._pod(namespace, name)
        if pod["metadata"].get("deletionTimestamp"):
            raise PodTerminating(409, "Conflict", f'pods "{name}" is terminating', {"name": name, "kind": "pods"})
        return pod

    def schedule(self, namespace: str, name: str, node: str | None = None) -> Obj:
        """The scheduler binds the Pod to a node: spec.nodeName, PodScheduled True, Event Scheduled."""
        node = node or self.node_name
        pod = self._live_pod(namespace, name)
        if (pod.get("spec") or {}).get("nodeName"):
            return pod

        def bind(p: Obj) -> None:
            p["spec"]["nodeName"] = node
            _condition(p["status"], "PodScheduled", True)

        pod = self._update("pods", namespace, name, bind, pod["metadata"]["uid"])
        self._event(
            pod, "Scheduled", f"Successfully assigned {namespace}/{name} to {node}", component="default-scheduler"
        )
        return pod

    def unschedulable(self, namespace: str, name: str, message: str | None = None) -> Obj:
        """The scheduler cannot place the Pod: PodScheduled False (Unschedulable), Event FailedScheduling.
        ValueError for a Pod already scheduled."""
        if (self._live_pod(namespace, name).get("spec") or {}).get("nodeName"):
            raise ValueError(f"pod {namespace}/{name} is already scheduled")
        message = message or (
            "0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are available: "
            "1 No preemption victims found for incoming pod."
        )
        pod = self._update(
            "pods",
            namespace,
            name,
            lambda p: _condition(p["status"], "PodScheduled", False, "Unschedulable", message),
        )
        self._event(pod, "FailedScheduling", message, "Warning", component="default-scheduler")
        return pod

    def _kubelet_start(self, namespace: str, name: str, uid: str) -> Obj:
        """The kubelet admits a scheduled Pod: conditions, hostIP, startTime, containers ContainerCreating."""

        def start(p: Obj) -> None:
            status = p["status"]
            if status.get("startTime"):
                return
            status["hostIP"] = "10.0.0.10"
            status["hostIPs"] = [{"ip": "10.0.0.10"}]
            status["startTime"] = now_rfc3339()
            _condition(status, "PodReadyToStartContainers", True)
            _condition(status, "Initialized", True)
            names = ", ".join(c["name"] for c in p["spec"]["containers"])
            _condition(status, "Ready", False, "ContainersNotReady", f"containers with unready status: [{names}]")
            _condition(
                status, "ContainersReady", False, "ContainersNotReady", f"containers with unready status: [{names}]"
            )
            status["containerStatuses"] = [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                    "lastState": {},
                }
                for c in p["spec"]["containers"]
            ]

        return self._update("pods", namespace, name, start, uid)

    def run(self, namespace: str, name: str, *, node: str | None = None, ready: bool = True, pull: bool = True) -> Obj:
        """Schedule (if needed) and start the Pod: Events Scheduled, Pulling, Pulled, Created, Started; then
        phase Running with podIP, containers running (ready unless ready=False) and the conditions True.
        Calls `on_run` first (see the module docstring) and points the Pod's Services at its address.
        A Pod already Running with every container running is returned as it is (no second on_run)."""
        pod = self._live_pod(namespace, name)
        statuses = pod["status"].get("containerStatuses") or []
        if pod["status"].get("phase") == "Running" and statuses and all("running" in c["state"] for c in statuses):
            return pod
        if pod["status"].get("phase") in ("Succeeded", "Failed"):
            raise ValueError(f"pod {namespace}/{name} has finished ({pod['status']['phase']})")
        pod = self.schedule(namespace, name, node)
        uid = pod["metadata"]["uid"]
        pod = self._kubelet_start(namespace, name, uid)
        for i, c in enumerate(pod["spec"]["containers"]):
            path = f"spec.containers{{{c['name']}}}"
            if pull:
                self._event(pod, "Pulling", f'Pulling image "{c["image"]}"', field_path=path)
                self._event(
                    pod,
                    "Pulled",
                    f'Successfully pulled image "{c["image"]}" in 1.2s (1.2s including '
                    f"waiting). Image size: {10_000_000 + i} bytes.",
                    field_path=path,
                )
            else:
                self._event(
                    pod, "Pulled", f'Container image "{c["image"]}" already present on machine', field_path=path
                )
            self._event(pod, "Created", f"Created container: {c['name']}", field_path=path)
            self._event(pod, "Started", f"Started container {c['name']}", field_path=path)
        return self._start_containers(namespace, name, uid, ready)

    def _start_containers(self, namespace: str, name: str, uid: str, ready: bool, restart: bool = False) -> Obj:
        if self._closing.is_set():
            raise FakeApiError(503, "ServiceUnavailable", "the fake kube-apiserver is stopping")
        pod = self._pod(namespace, name)
        address = None
        if self.on_run is not None:
            with self._lock:
                services = [
                    s
                    for s in self.objects("services", namespace)
                    if self._selects((s.get("spec") or {}).get("selector") or {}, pod)
                ]
            address = self.on_run(copy.deepcopy(pod), services)
        with self._lock:
            current = self._objects.get(("pods", namespace, name))
            if (
                current is not None
                and current["metadata"]["uid"] == uid
                and not current["metadata"].get("deletionTimestamp")
                and not self._closing.is_set()
            ):
                return self._commit_running(namespace, name, uid, ready, restart, address)
        # Deleted (or terminating, or the fake stopping) while on_run started its process: stop that again.
        if self.on_run is not None and self.on_stop is not None:
            self.on_stop(copy.deepcopy(pod))
        raise not_found("pods", name)

    def _commit_running(
        self, namespace: str, name: str, uid: str, ready: bool, restart: bool, address: tuple[str, int] | None
    ) -> Obj:
        with self._lock:
            if self.on_run is not None:
                self._running_hooks.add((namespace, name, uid))
            if address is not None:
                self._addresses[(namespace, name)] = (address[0], int(address[1]))
            pod_ip = address[0] if address is not None else f"10.244.0.{next(self._ips) % 250 + 2}"

            def running(p: Obj) -> None:
                status = p["status"]
                status["phase"] = "Running"
                if not restart or not status.get("podIP"):
                    status["podIP"] = pod_ip
                    status["podIPs"] = [{"ip": pod_ip}]
                stamp = now_rfc3339()
                old = {c["name"]: c for c in status.get("containerStatuses") or []}
                statuses = []
                for c in p["spec"]["containers"]:
                    previous = old.get(c["name"], {})
                    statuses.append(
                        {
                            "name": c["name"],
                            "image": c["image"],
                            "imageID": f"{c['image'].split(':')[0]}@sha256:"
                            + hashlib.sha256(c["image"].encode()).hexdigest(),
                            "containerID": f"containerd://{uuid.uuid4().hex}{uuid.uuid4().hex}",
                            "ready": ready,
                            "started": True,
                            "restartCount": previous.get("restartCount", 0),
                            "state": {"running": {"startedAt": stamp}},
                            "lastState": previous.get("lastState") or {},
                        }
                    )
                status["containerStatuses"] = statuses
                names = ", ".join(c["name"] for c in p["spec"]["containers"])
                for kind in ("Ready", "ContainersReady"):
                    if ready:
                        _condition(status, kind, True)
                    else:
                        _condition(
                            status, kind, False, "ContainersNotReady", f"containers with unready status: [{names}]"
                        )

            pod = self._update("pods", namespace, name, running, uid)
            if address is not None:
                self._point_services(namespace, pod, self._addresses[(namespace, name)])
            return pod

    def _selects(self, selector: dict[str, str], pod: Obj) -> bool:
        labels = pod["metadata"].get("labels") or {}
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    @staticmethod
    def _point(spec: Obj, address: tuple[str, int]) -> None:
        host, port = address
        spec["clusterIP"] = host
        spec["clusterIPs"] = [host]
        if spec.get("ports"):
            spec["ports"][0]["port"] = port
            spec["ports"][0]["targetPort"] = port

    def _point_services(self, namespace: str, pod: Obj, address: tuple[str, int]) -> None:
        for svc in self.objects("services", namespace):
            spec = svc.get("spec") or {}
            if spec.get("clusterIP") != "None" and self._selects(spec.get("selector") or {}, pod):
                self._update("services", namespace, svc["metadata"]["name"], lambda s: self._point(s["spec"], address))

    def set_ready(self, namespace: str, name: str, ready: bool = True) -> Obj:
        """A readiness probe passes (or fails): containers' ready and the Ready/ContainersReady conditions."""

        def mark(p: Obj) -> None:
            status = p["status"]
            for c in status.get("containerStatuses") or []:
                c["ready"] = ready and "running" in c["state"]
            names = ", ".join(c["name"] for c in status.get("containerStatuses") or [] if not c["ready"])
            for kind in ("Ready", "ContainersReady"):
                if not names:
                    _condition(status, kind, True)
                else:
                    _condition(status, kind, False, "ContainersNotReady", f"containers with unready status: [{names}]")

        pod = self._update("pods", namespace, name, mark)
        if not ready:
            self._event(pod, "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503", "Warning")
        return pod

    def fail_image_pull(
        self, namespace: str, name: str, reason: str = "ImagePullBackOff", message: str | None = None
    ) -> Obj:
        """The image cannot be pulled: phase stays Pending, containers waiting with reason ErrImagePull or
        ImagePullBackOff; Events Pulling, Failed (the pull error), Failed "Error: ErrImagePull" and, for
        ImagePullBackOff, BackOff and Failed "Error: ImagePullBackOff"."""
        if reason not in ("ErrImagePull", "ImagePullBackOff"):
            raise ValueError(f"reason must be ErrImagePull or ImagePullBackOff, not {reason!r}")
        pod = self.schedule(namespace, name)
        uid = pod["metadata"]["uid"]
        pod = self._kubelet_start(namespace, name, uid)
        for c in pod["spec"]["containers"]:
            image, path = c["image"], f"spec.containers{{{c['name']}}}"
            error = message or (
                f'failed to pull and unpack image "{image}": failed to resolve reference "{image}": {image}: not found'
            )
            self._event(pod, "Pulling", f'Pulling image "{image}"', field_path=path)
            self._event(pod, "Failed", f'Failed to pull image "{image}": {error}', "Warning", field_path=path)
            self._event(pod, "Failed", "Error: ErrImagePull", "Warning", field_path=path)
            if reason == "ImagePullBackOff":
                self._event(pod, "BackOff", f'Back-off pulling image "{image}"', field_path=path)
                self._event(pod, "Failed", "Error: ImagePullBackOff", "Warning", field_path=path)

        def waiting(p: Obj) -> None:
            for cs in p["status"].get("containerStatuses") or []:
                image = cs["image"]
                error = message or (
                    f'failed to pull and unpack image "{image}": failed to resolve reference "{image}": '
                    f"{image}: not found"
                )
                text = (
                    f'Back-off pulling image "{image}": ErrImagePull: {error}'
                    if reason == "ImagePullBackOff"
                    else f"rpc error: code = NotFound desc = {error}"
                )
                cs["state"] = {"waiting": {"reason": reason, "message": text}}
                cs["ready"] = False

        return self._update("pods", namespace, name, waiting, uid)

    def oom_kill(self, namespace: str, name: str, container: str | None = None, restart: bool | None = None) -> Obj:
        """A container is OOM-killed (exit code 137, reason OOMKilled). With restart (default: the Pod's
        restartPolicy is Always or OnFailure) the kubelet restarts it: restartCount + 1, lastState.terminated
        OOMKilled, running again (on_stop then on_run are called); without, the Pod's phase becomes Failed.
        Events: a Warning OOMKilled on the Pod (the fake's own; a real kubelet records the reason only in the
        container status), then Pulled/Created/Started for a restart."""
        return self._container_exit(namespace, name, container, 137, "OOMKilled", restart)

    def terminate(
        self,
        namespace: str,
        name: str,
        exit_code: int = 0,
        reason: str | None = None,
        container: str | None = None,
        restart: bool | None = None,
    ) -> Obj:
        """A container exits with exit_code (reason Completed for 0, else Error). With restart (default per the
        restartPolicy: Always restarts, OnFailure for a non-zero code) it runs again; without, and when every
        container has stopped, the phase becomes Succeeded (all exited 0) or Failed."""
        return self._container_exit(
            namespace, name, container, exit_code, reason or ("Completed" if exit_code == 0 else "Error"), restart
        )

    def _container_exit(
        self, namespace: str, name: str, container: str | None, exit_code: int, reason: str, restart: bool | None
    ) -> Obj:
        pod = self._pod(namespace, name)
        uid = pod["metadata"]["uid"]
        container = container or pod["spec"]["containers"][0]["name"]
        state = next((c["state"] for c in pod["status"].get("containerStatuses") or [] if c["name"] == container), {})
        if "running" not in state:
            raise ValueError(f"container {container} of pod {namespace}/{name} is not running")
        if restart is None:
            policy = pod["spec"].get("restartPolicy", "Always")
            restart = policy == "Always" or (policy == "OnFailure" and exit_code != 0)
        if self._take_running_hook(namespace, name, uid) and self.on_stop is not None:
            self.on_stop(copy.deepcopy(pod))
        stamp = now_rfc3339()

        def exited(p: Obj) -> None:
            status = p["status"]
            for cs in status.get("containerStatuses") or []:
                if cs["name"] != container:
                    continue
                started = (cs["state"].get("running") or {}).get("startedAt", stamp)
                terminated = {
                    "exitCode": exit_code,
                    "reason": reason,
                    "startedAt": started,
                    "finishedAt": stamp,
                    "containerID": cs.get("containerID", ""),
                }
                cs["ready"] = False
                cs["started"] = False
                if restart:
                    cs["lastState"] = {"terminated": terminated}
                    cs["restartCount"] = cs.get("restartCount", 0) + 1
                    cs["state"] = {"waiting": {"reason": "ContainerCreating"}}
                else:
                    cs["state"] = {"terminated": terminated}
            names = ", ".join(c["name"] for c in status.get("containerStatuses") or [] if not c["ready"])
            for kind in ("Ready", "ContainersReady"):
                _condition(
                    status,
                    kind,
                    False,
                    "PodFailed" if not restart else "ContainersNotReady",
                    None if not restart else f"containers with unready status: [{names}]",
                )
            statuses = status.get("containerStatuses") or []
            if not restart and all("terminated" in c["state"] for c in statuses):
                ok = all(c["state"]["terminated"]["exitCode"] == 0 for c in statuses)
                status["phase"] = "Succeeded" if ok else "Failed"
                for kind in ("Ready", "ContainersReady"):
                    _condition(status, kind, False, "PodCompleted" if ok else "PodFailed")

        pod = self._update("pods", namespace, name, exited, uid)
        path = f"spec.containers{{{container}}}"
        if reason == "OOMKilled":
            limit = next(
                (
                    ((c.get("resources") or {}).get("limits") or {}).get("memory", "?")
                    for c in pod["spec"]["containers"]
                    if c["name"] == container
                ),
                "?",
            )
            self._event(
                pod,
                "OOMKilled",
                f"Container {container} was OOM-killed (memory limit {limit})",
                "Warning",
                field_path=path,
            )
        if not restart:
            return pod
        c = next(c for c in pod["spec"]["containers"] if c["name"] == container)
        self._event(pod, "Pulled", f'Container image "{c["image"]}" already present on machine', field_path=path)
        self._event(pod, "Created", f"Created container: {container}", field_path=path)
        self._event(pod, "Started", f"Started container {container}", field_path=path)
        return self._start_containers(namespace, name, uid, ready=True, restart=True)

    def crash_loop(self, namespace: str, name: str, exit_code: int = 1, container: str | None = None) -> Obj:
        """The container exits at start and the kubelet backs off (an image whose command fails): each call is one
        more crash: lastState.terminated (reason Error, exit_code), restartCount + 1, state.waiting
        CrashLoopBackOff ("back-off 10s restarting failed container=..."; 20s, 40s, ... up to 5m0s), not ready,
        phase Running (the container did start); Events Created/Started the first time, then BackOff (Warning,
        count going up). Schedules and admits the Pod first if needed; calls on_stop if on_run had run."""
        pod = self._live_pod(namespace, name)
        if pod["status"].get("phase") in ("Succeeded", "Failed"):
            raise ValueError(f"pod {namespace}/{name} has finished ({pod['status']['phase']})")
        pod = self.schedule(namespace, name)
        uid = pod["metadata"]["uid"]
        pod = self._kubelet_start(namespace, name, uid)
        container = container or pod["spec"]["containers"][0]["name"]
        if container not in [c["name"] for c in pod["spec"]["containers"]]:
            raise ValueError(f"pod {namespace}/{name} has no container {container}")
        path = f"spec.containers{{{container}}}"
        if not any(c["name"] == container and c.get("restartCount") for c in pod["status"]["containerStatuses"]):
            self._event(pod, "Created", f"Created container: {container}", field_path=path)
            self._event(pod, "Started", f"Started container {container}", field_path=path)
        if self._take_running_hook(namespace, name, uid) and self.on_stop is not None:
            self.on_stop(copy.deepcopy(pod))
        stamp = now_rfc3339()

        def crashed(p: Obj) -> None:
            status = p["status"]
            status["phase"] = "Running"
            for cs in status.get("containerStatuses") or []:
                if cs["name"] != container:
                    continue
                restarts = cs.get("restartCount", 0) + 1
                backoff = min(10 * 2 ** (restarts - 1), 300)
                text = f"{backoff}s" if backoff < 60 else f"{backoff // 60}m{backoff % 60}s"
                cs["lastState"] = {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Error",
                        "startedAt": stamp,
                        "finishedAt": stamp,
                        "containerID": cs.get("containerID") or f"containerd://{uuid.uuid4().hex}{uuid.uuid4().hex}",
                    }
                }
                cs["state"] = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off {text} restarting failed container={container} pod={name}_{namespace}"
                        f"({uid})",
                    }
                }
                cs["restartCount"] = restarts
                cs["ready"] = False
                cs["started"] = False
            names = ", ".join(c["name"] for c in status.get("containerStatuses") or [] if not c["ready"])
            for kind in ("Ready", "ContainersReady"):
                _condition(status, kind, False, "ContainersNotReady", f"containers with unready status: [{names}]")

        pod = self._update("pods", namespace, name, crashed, uid)
        self._event(
            pod,
            "BackOff",
            f"Back-off restarting failed container {container} in pod {name}_{namespace}({uid})",
            "Warning",
            field_path=path,
        )
        return pod

    def evict(self, namespace: str, name: str, message: str | None = None) -> Obj:
        """The kubelet evicts the Pod (node pressure): phase Failed, status.reason Evicted and status.message,
        containers terminated (137), condition DisruptionTarget (TerminationByKubelet); Events Evicted (Warning)
        and Killing. The Pod object stays (as evicted Pods do) until deleted; on_stop is called."""
        message = message or (
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. Container "
            "notebook was using 2Gi, request is 1Gi, has larger consumption of memory. "
        )
        pod = self._pod(namespace, name)
        uid = pod["metadata"]["uid"]
        if pod["status"].get("phase") in ("Succeeded", "Failed"):
            raise ValueError(f"pod {namespace}/{name} has finished ({pod['status']['phase']})")
        self._event(pod, "Evicted", message, "Warning")
        for cs in pod["status"].get("containerStatuses") or []:
            if "running" in cs["state"]:
                self._event(
                    pod, "Killing", f"Stopping container {cs['name']}", field_path=f"spec.containers{{{cs['name']}}}"
                )
        if self._take_running_hook(namespace, name, uid) and self.on_stop is not None:
            self.on_stop(copy.deepcopy(pod))
        stamp = now_rfc3339()

        def evicted(p: Obj) -> None:
            status = p["status"]
            status["phase"] = "Failed"
            status["reason"] = "Evicted"
            status["message"] = message
            _condition(status, "DisruptionTarget", True, "TerminationByKubelet", message)
            for cs in status.get("containerStatuses") or []:
                started = (cs["state"].get("running") or {}).get("startedAt", stamp)
                cs["state"] = {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "Error",
                        "startedAt": started,
                        "finishedAt": stamp,
                        "containerID": cs.get("containerID", ""),
                    }
                }
                cs["ready"] = False
                cs["started"] = False
            for kind in ("Ready", "ContainersReady"):
                _condition(status, kind, False, "PodFailed")

        return self._update("pods", namespace, name, evicted, uid)

    def set_pod_status(self, namespace: str, name: str, mutate: Callable[[Obj], None]) -> Obj:
        """Change a Pod's status (or anything) through `mutate(pod_dict)`; one MODIFIED event if it changed."""
        return self._update("pods", namespace, name, mutate)

    def bind_pvc(self, namespace: str, name: str) -> Obj:
        """Bind a Pending PVC (see bind_pvcs=False): phase Bound, capacity, spec.volumeName."""
        return self._update("persistentvolumeclaims", namespace, name, self._bind)

    def set_log(self, namespace: str, name: str, text: str) -> None:
        """The text GET .../pods/NAME/log returns."""
        with self._lock:
            self._logs[(namespace, name)] = text

    # --- HTTP --------------------------------------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/version", self._h_version, methods=["GET"]),
                Route("/version/", self._h_version, methods=["GET"]),
                Route("/api", self._h_discovery, methods=["GET"]),
                Route("/apis", self._h_discovery, methods=["GET"]),
                Route("/api/v1", self._h_discovery, methods=["GET"]),
                Route("/api/v1/namespaces", self._h_namespaces, methods=["GET", "POST"]),
                Route("/api/v1/namespaces/{name}", self._h_namespace, methods=["GET"]),
                Route("/api/v1/namespaces/{namespace}/pods/{name}/log", self._h_log, methods=["GET"]),
                Route(
                    "/api/v1/namespaces/{namespace}/{plural}/{name}/status",
                    self._h_status,
                    methods=["GET", "PUT", "PATCH"],
                ),
                Route("/api/v1/{plural}", self._h_cluster, methods=["GET"]),
                Route(
                    "/api/v1/namespaces/{namespace}/{plural}",
                    self._h_collection,
                    methods=["GET", "POST", "DELETE", "PUT", "PATCH"],
                ),
                Route(
                    "/api/v1/namespaces/{namespace}/{plural}/{name}",
                    self._h_item,
                    methods=["GET", "PUT", "PATCH", "DELETE", "POST"],
                ),
                Route("/{path:path}", self._h_unknown, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            ],
            exception_handlers={FakeApiError: self._h_error, Exception: self._h_bug},  # type: ignore[dict-item]
        )

    @staticmethod
    def _json(obj: Any, code: int = 200) -> Response:
        return Response(json.dumps(obj), status_code=code, media_type="application/json")

    async def _h_error(self, request: Request, exc: FakeApiError) -> Response:
        return self._json(exc.status(), exc.code)

    async def _h_bug(self, request: Request, exc: Exception) -> Response:
        """A bug of the fake (or a request it cannot take): 500 with a Status, and recorded in `errors`."""
        log.error("fake kube-apiserver: %s %s failed", request.method, request.url, exc_info=exc)
        with self._lock:
            self.errors.append(exc)
        return self._json(FakeApiError(500, "InternalError", f"the fake failed: {exc!r}").status(), 500)

    def _record(self, request: Request) -> None:
        """Log the request and fail it if an injected failure matches."""
        query = request.url.query
        plural = request.path_params.get("plural")
        if plural is None and "/pods/" in request.url.path:
            plural = "pods"  # .../pods/NAME/log
        name = request.path_params.get("name")
        is_watch = parse_bool(request.query_params.get("watch"))
        with self._lock:
            self.requests.append((request.method, request.url.path + (f"?{query}" if query else "")))
            for fault in self._faults:
                if fault.matches(request.method, plural, name, is_watch):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    raise fault.error

    def inject_failure(
        self,
        *,
        method: str | None = None,
        plural: str | None = None,
        name: str | None = None,
        watch: bool | None = None,
        code: int = 500,
        reason: str = "InternalError",
        message: str = 'an error on the server ("injected by the test") has prevented the request from succeeding',
        times: int = 1,
    ) -> Fault:
        """Fail the next `times` HTTP requests that match (None matches anything; times=-1: until
        clear_failures()) with a Status of this code, reason and message. A watch request fails before streaming.
        E.g. a quota: `inject_failure(method="POST", plural="pods", code=403, reason="Forbidden",
        message='pods "x" is forbidden: exceeded quota: compute, requested: limits.cpu=2, used: limits.cpu=8,
        limited: limits.cpu=8')`; throttling: code=429, reason="TooManyRequests"."""
        fault = Fault(
            method.upper() if method else None, plural, name, watch, FakeApiError(code, reason, message), times
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_failures(self) -> None:
        with self._lock:
            self._faults.clear()

    def drop_watches(self) -> None:
        """End every open watch stream (cleanly, as when an apiserver restarts or a proxy drops idle streams); a
        client resumes from the last resourceVersion it saw."""
        with self._lock:
            self._watch_generation += 1
            self._wake_all()

    @property
    def open_watches(self) -> int:
        """How many watch streams are open now (e.g. to wait until the runtime's watch is established)."""
        with self._lock:
            return len(self._subscribers)

    @staticmethod
    def _resource(plural: str) -> Resource:
        try:
            return RESOURCES[plural]
        except KeyError:
            raise FakeApiError(404, "NotFound", "the server could not find the requested resource") from None

    async def _h_unknown(self, request: Request) -> Response:
        self._record(request)
        raise FakeApiError(404, "NotFound", "the server could not find the requested resource")

    async def _h_version(self, request: Request) -> Response:
        self._record(request)
        return self._json(
            {
                "major": "1",
                "minor": "32",
                "gitVersion": "v1.32.0-nbfleet-fake",
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.23",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )

    async def _h_discovery(self, request: Request) -> Response:
        """Legacy discovery (/api, /apis, /api/v1), enough for kubectl to find the core/v1 kinds served here."""
        self._record(request)
        path = request.url.path.rstrip("/")
        if path == "/api":
            return self._json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                    ],
                }
            )
        if path == "/apis":
            return self._json({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        short = {
            "pods": ["po"],
            "services": ["svc"],
            "persistentvolumeclaims": ["pvc"],
            "configmaps": ["cm"],
            "events": ["ev"],
            "namespaces": ["ns"],
        }
        resources = [
            {
                "name": r.plural,
                "singularName": r.kind.lower(),
                "namespaced": True,
                "kind": r.kind,
                "verbs": verbs,
                "shortNames": short.get(r.plural, []),
            }
            for r in RESOURCES.values()
        ]
        resources += [
            {
                "name": f"{r.plural}/status",
                "singularName": "",
                "namespaced": True,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }
            for r in RESOURCES.values()
            if r.plural in ("pods", "services", "persistentvolumeclaims")
        ]
        resources.append({"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]})
        resources.append(
            {
                "name": "namespaces",
                "singularName": "namespace",
                "namespaced": False,
                "kind": "Namespace",
                "verbs": ["create", "get", "list"],
                "shortNames": ["ns"],
            }
        )
        return self._json({"kind": "APIResourceList", "groupVersion": "v1", "resources": resources})

    async def _h_namespaces(self, request: Request) -> Response:
        self._record(request)
        if request.method == "POST":  # 409 when it exists (with namespaces=None, every namespace exists)
            body = await self._body(request)
            name = (body.get("metadata") or {}).get("name") or ""
            if len(name) > 63 or not _DNS_LABEL_RE.match(name):
                raise invalid("Namespace", name, [("metadata.name", f'Invalid value: "{name}"')])
            with self._lock:
                if self._namespaces is None or name in self._namespaces:
                    raise already_exists("namespaces", name)
                self._namespaces.add(name)
                return self._json(self._namespace_object(name), 201)
        with self._lock:
            names = (
                sorted(self._namespaces)
                if self._namespaces is not None
                else sorted({ns for (_, ns, _) in self._objects} | {"default"})
            )
            items = [self._namespace_object(n) for n in names]
            return self._json(self._list("Namespace", items))

    async def _h_namespace(self, request: Request) -> Response:
        self._record(request)
        name = request.path_params["name"]
        with self._lock:
            self._check_namespace(name)
            return self._json(self._namespace_object(name))

    async def _h_log(self, request: Request) -> Response:
        self._record(request)
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        with self._lock:
            self._raw("pods", namespace, name)
            return PlainTextResponse(self._logs.get((namespace, name), ""))

    def _list(self, kind: str, items: list[Obj]) -> Obj:
        for item in items:
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return {
            "kind": f"{kind}List",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    async def _h_cluster(self, request: Request) -> Response:
        self._record(request)
        res = self._resource(request.path_params["plural"])
        return await self._list_or_watch(request, res, None)

    async def _h_collection(self, request: Request) -> Response:
        self._record(request)
        res = self._resource(request.path_params["plural"])
        namespace = request.path_params["namespace"]
        if request.method == "GET":
            return await self._list_or_watch(request, res, namespace)
        if request.method == "POST":
            body = await self._body(request)
            return self._json(self.create(res.plural, namespace, body), 201)
        if request.method == "DELETE":
            options = await self._delete_options(request)
            grace = options.get("gracePeriodSeconds")
            deleted = self.delete_collection(
                res.plural,
                namespace,
                request.query_params.get("labelSelector"),
                request.query_params.get("fieldSelector"),
                options.get("propagationPolicy"),
                grace_period_seconds=int(grace) if grace is not None else None,
            )
            with self._lock:
                return self._json(self._list(res.kind, deleted))
        raise FakeApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    async def _h_item(self, request: Request) -> Response:
        self._record(request)
        res = self._resource(request.path_params["plural"])
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        if request.method == "GET":
            return self._json(self.get(res.plural, namespace, name))
        if request.method == "PUT":
            return self._json(self.replace(res.plural, namespace, name, await self._body(request)))
        if request.method == "PATCH":
            content_type = request.headers.get("content-type", "").split(";")[0].strip()
            if "apply-patch" in content_type:
                raise FakeApiError(415, "UnsupportedMediaType", "server-side apply is not implemented by the fake")
            return self._json(
                self.patch(res.plural, namespace, name, await self._body(request, any_json=True), content_type)
            )
        if request.method == "DELETE":
            options = await self._delete_options(request)
            grace = options.get("gracePeriodSeconds")
            return self._json(
                self.delete(
                    res.plural,
                    namespace,
                    name,
                    propagation_policy=options.get("propagationPolicy"),
                    grace_period_seconds=int(grace) if grace is not None else None,
                    preconditions=options.get("preconditions"),
                )
            )
        raise FakeApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    async def _h_status(self, request: Request) -> Response:
        """The status subresource: GET is the object; PUT and PATCH change its status only."""
        self._record(request)
        res = self._resource(request.path_params["plural"])
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        if request.method == "GET":
            return self._json(self.get(res.plural, namespace, name))
        body = await self._body(request, any_json=True)
        with self._lock:
            current = self._raw(res.plural, namespace, name)
            if request.method == "PUT":
                new = body if isinstance(body, dict) else {}
                rv = (new.get("metadata") or {}).get("resourceVersion")
                if rv and rv != current["metadata"]["resourceVersion"]:
                    raise conflict(
                        res.plural,
                        name,
                        "the object has been modified; please apply your changes to the latest version and try again",
                    )
            else:
                content_type = request.headers.get("content-type", "").split(";")[0].strip()
                new = self._apply_patch(current, body, content_type)
            status = copy.deepcopy(new.get("status"))
            return self._json(self._update(res.plural, namespace, name, lambda o: o.__setitem__("status", status)))

    @staticmethod
    async def _body(request: Request, any_json: bool = False) -> Any:
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            raise bad_request(f"the body of the request is not valid JSON: {exc}") from None
        if not any_json and not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        return body

    async def _delete_options(self, request: Request) -> Obj:
        raw = await request.body()
        options: Obj = {}
        if raw.strip():
            try:
                options = json.loads(raw) or {}
            except ValueError:
                raise bad_request("the DeleteOptions in the body are not valid JSON") from None
        for key in ("propagationPolicy", "gracePeriodSeconds"):
            if key in request.query_params:
                options[key] = request.query_params[key]
        if "orphanDependents" in options and "propagationPolicy" not in options:
            options["propagationPolicy"] = "Orphan" if options["orphanDependents"] in (True, "true") else "Background"
        return options

    async def _list_or_watch(self, request: Request, res: Resource, namespace: str | None) -> Response:
        params = request.query_params
        labels = parse_label_selector(params.get("labelSelector"))
        fields = parse_field_selector(params.get("fieldSelector"), res.plural)
        if parse_bool(params.get("watch")):
            if namespace is not None:
                with self._lock:
                    self._check_namespace(namespace)
            return self._watch(res, namespace, labels, fields, params)
        if "limit" in params:
            pass  # everything at once: no continue token (see the module docstring)
        with self._lock:
            if namespace is not None:
                self._check_namespace(namespace)
            items = [
                copy.deepcopy(obj)
                for (p, ns, _), obj in sorted(self._objects.items())
                if p == res.plural
                and (namespace is None or ns == namespace)
                and labels_match(labels, obj["metadata"].get("labels"))
                and fields_match(fields, obj)
            ]
            return self._json(self._list(res.kind, items))

    def _watch(
        self,
        res: Resource,
        namespace: str | None,
        labels: list[Requirement],
        fields: list[tuple[str, bool, str]],
        params: Any,
    ) -> Response:
        rv_param = params.get("resourceVersion") or ""
        bookmarks = parse_bool(params.get("allowWatchBookmarks"))
        try:
            timeout = float(params.get("timeoutSeconds") or self.watch_timeout)
        except ValueError:
            raise bad_request("timeoutSeconds must be an integer") from None
        if rv_param not in ("", "0") and not rv_param.isdigit():
            raise bad_request(f'invalid resource version "{rv_param}"')

        def matches(obj: Obj | None) -> bool:
            return (
                obj is not None
                and (namespace is None or obj["metadata"]["namespace"] == namespace)
                and labels_match(labels, obj["metadata"].get("labels"))
                and fields_match(fields, obj)
            )

        def line(type_: str, obj: Obj) -> bytes:
            return (json.dumps({"type": type_, "object": obj}) + "\n").encode()

        def expired(requested: int) -> bytes:
            status = FakeApiError(410, "Expired", f"too old resource version: {requested} ({self._compacted + 1})")
            return line("ERROR", status.status())

        wake = asyncio.Event()
        loop = asyncio.get_running_loop()

        def notify() -> None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:
                pass  # the loop is closed

        with self._lock:
            initial: list[bytes] = []
            if rv_param in ("", "0"):
                initial = [
                    line("ADDED", copy.deepcopy(obj))
                    for (p, _, _), obj in sorted(
                        self._objects.items(), key=lambda kv: int(kv[1]["metadata"]["resourceVersion"])
                    )
                    if p == res.plural and matches(obj)
                ]
                start = self._rv
            else:
                start = int(rv_param)
                if start < self._compacted:
                    return StreamingResponse(iter([expired(start)]), media_type="application/json")
            self._subscribers.add(notify)
            generation = self._watch_generation

        async def stream() -> Any:
            last = start
            try:
                for chunk in initial:
                    yield chunk
                deadline = loop.time() + timeout
                last_sent = loop.time()
                while not self._closing.is_set():
                    wake.clear()
                    out: list[bytes] = []
                    with self._lock:
                        too_old = last < self._compacted
                        dropped = self._watch_generation != generation
                        changes = [c for c in self._log if c.rv > last and c.plural == res.plural]
                        upto = self._rv
                    if too_old:  # fell behind the kept history
                        yield expired(last)
                        return
                    if dropped:  # drop_watches(): the connection ends, as when an apiserver restarts
                        return
                    for change in changes:
                        now_matches, before = matches(change.obj), matches(change.old)
                        if change.type == "ADDED" and now_matches:
                            out.append(line("ADDED", change.obj))
                        elif change.type == "DELETED" and before:
                            out.append(line("DELETED", change.obj))
                        elif change.type == "MODIFIED":
                            if now_matches and before:
                                out.append(line("MODIFIED", change.obj))
                            elif now_matches:
                                out.append(line("ADDED", change.obj))
                            elif before and change.old is not None:
                                gone = copy.deepcopy(change.old)
                                gone["metadata"]["resourceVersion"] = str(change.rv)
                                out.append(line("DELETED", gone))
                    last = upto
                    for chunk in out:
                        yield chunk
                    now = loop.time()
                    if out:
                        last_sent = now
                    if now >= deadline:
                        return
                    if bookmarks and now - last_sent >= self.bookmark_interval:
                        yield line(
                            "BOOKMARK",
                            {"kind": res.kind, "apiVersion": "v1", "metadata": {"resourceVersion": str(last)}},
                        )
                        last_sent = now
                    wait = deadline - now
                    if bookmarks:
                        wait = min(wait, max(0.01, last_sent + self.bookmark_interval - now))
                    try:
                        await asyncio.wait_for(wake.wait(), timeout=wait)
                    except TimeoutError:
                        pass
            finally:
                with self._lock:
                    self._subscribers.discard(notify)

        return StreamingResponse(stream(), media_type="application/json")


# --- auto policies ---------------------------------------------------------------------------------------------------


def run_after(delay: float = 0.0, ready: bool = True) -> Policy:
    """A Pod created runs after `delay` seconds (Scheduled ... Started, phase Running)."""

    def policy(fake: FakeKubeApiServer, pod: Obj) -> None:
        if fake.sleep(delay):
            fake.run(pod["metadata"]["namespace"], pod["metadata"]["name"], ready=ready)

    return policy


def fail_image_pull_after(delay: float = 0.0, reason: str = "ImagePullBackOff") -> Policy:
    """A Pod created fails to pull its image after `delay` seconds."""

    def policy(fake: FakeKubeApiServer, pod: Obj) -> None:
        if fake.sleep(delay):
            fake.fail_image_pull(pod["metadata"]["namespace"], pod["metadata"]["name"], reason)

    return policy


def unschedulable_after(delay: float = 0.0, message: str | None = None) -> Policy:
    """A Pod created cannot be scheduled (FailedScheduling) after `delay` seconds."""

    def policy(fake: FakeKubeApiServer, pod: Obj) -> None:
        if fake.sleep(delay):
            fake.unschedulable(pod["metadata"]["namespace"], pod["metadata"]["name"], message)

    return policy


def crash_loop_after(delay: float = 0.0, exit_code: int = 1) -> Policy:
    """A Pod created crashes at start (CrashLoopBackOff) after `delay` seconds."""

    def policy(fake: FakeKubeApiServer, pod: Obj) -> None:
        if fake.sleep(delay):
            fake.crash_loop(pod["metadata"]["namespace"], pod["metadata"]["name"], exit_code)

    return policy


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll predicate until it returns something truthy (returned) or raise AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.kube.fake_apiserver [--auto-run SECONDS] [--kubeconfig PATH]`: serve until interrupted (for
    trying a runtime or kubectl by hand)."""
    parser = argparse.ArgumentParser(description="Run the fake Kubernetes API server until interrupted.")
    parser.add_argument("--auto-run", type=float, default=None, help="Pods run by themselves after SECONDS")
    parser.add_argument("--kubeconfig", default=None, help="write a kubeconfig for it to this path")
    parser.add_argument("--namespace", default="default", help="the kubeconfig's namespace")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with FakeKubeApiServer(auto=run_after(args.auto_run) if args.auto_run is not None else None) as fake:
        print(fake.url, flush=True)
        if args.kubeconfig:
            fake.write_kubeconfig(args.kubeconfig, args.namespace)
            print(f"export KUBECONFIG={args.kubeconfig}", flush=True)
        done = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: done.set())
        done.wait()


if __name__ == "__main__":
    main()
