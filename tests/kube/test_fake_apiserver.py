"""The fake Kubernetes API server follows the REST API's conventions, checked with the official `kubernetes` client
(CoreV1Api and kubernetes.watch.Watch), so that the runtime's tests against it mean something."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from .fake_apiserver import (
    FakeApiError,
    FakeKubeApiServer,
    crash_loop_after,
    fail_image_pull_after,
    run_after,
    unschedulable_after,
    wait_until,
)

NS = "nb"


def pod_body(name: str, labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}, **meta},
        "spec": {
            "containers": [
                {
                    "name": "notebook",
                    "image": "registry.local/notebook:1.0",
                    "ports": [{"containerPort": 8888}],
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                }
            ]
        },
    }


def service_body(name: str, selector: dict[str, str], **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, **meta}, "spec": {"selector": selector, "ports": [{"port": 8888}]}}


def pvc_body(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, **meta},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def owner_ref(obj: Any, kind: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": kind, "name": obj.metadata.name, "uid": obj.metadata.uid}


def collect(stream: Any, w: watch.Watch, count: int, types: tuple[str, ...] = ("ADDED", "MODIFIED", "DELETED")):
    """The first `count` events of the given types from a Watch stream (which must have timeout_seconds)."""
    got = []
    for event in stream:
        if event["type"] in types:
            got.append(event)
        if len(got) >= count:
            w.stop()
            break
    return got


def message(exc: ApiException) -> str:
    return json.loads(exc.body)["message"]


def api_error(fn: Any, *args: Any, **kwargs: Any) -> ApiException:
    with pytest.raises(ApiException) as info:
        fn(*args, **kwargs)
    return info.value


# --- create, get, list, delete -------------------------------------------------------------------------------------


def test_create_get_list_delete_the_three_kinds(core_v1):
    pod = core_v1.create_namespaced_pod(NS, pod_body("nb-1", {"app": "nb"}))
    svc = core_v1.create_namespaced_service(NS, service_body("nb-1", {"app": "nb"}))
    pvc = core_v1.create_namespaced_persistent_volume_claim(NS, pvc_body("nb-1-data"))

    for obj in (pod, svc, pvc):
        assert obj.metadata.uid and obj.metadata.namespace == NS
        assert obj.metadata.resource_version.isdigit()
        assert obj.metadata.creation_timestamp is not None
    assert pod.kind == "Pod" and pod.api_version == "v1"
    assert pod.status.phase == "Pending" and pod.status.qos_class == "Guaranteed"  # limits only: requests = limits
    assert pod.spec.restart_policy == "Always" and pod.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert svc.spec.cluster_ip and svc.spec.cluster_ip != "None" and svc.spec.type == "ClusterIP"
    assert svc.spec.ports[0].target_port == 8888 and svc.spec.ports[0].protocol == "TCP"
    assert pvc.status.phase == "Bound" and pvc.status.capacity == {"storage": "1Gi"}

    assert core_v1.read_namespaced_pod("nb-1", NS).metadata.uid == pod.metadata.uid
    assert core_v1.read_namespaced_service("nb-1", NS).spec.cluster_ip == svc.spec.cluster_ip
    assert core_v1.read_namespaced_persistent_volume_claim("nb-1-data", NS).metadata.uid == pvc.metadata.uid

    pods = core_v1.list_namespaced_pod(NS)
    assert pods.kind == "PodList" and [p.metadata.name for p in pods.items] == ["nb-1"]
    assert int(pods.metadata.resource_version) == int(pvc.metadata.resource_version)  # the latest change
    assert [s.metadata.name for s in core_v1.list_namespaced_service(NS).items] == ["nb-1"]
    assert [c.metadata.name for c in core_v1.list_namespaced_persistent_volume_claim(NS).items] == ["nb-1-data"]
    assert core_v1.list_namespaced_pod("other").items == []
    assert [p.metadata.name for p in core_v1.list_pod_for_all_namespaces().items] == ["nb-1"]

    deleted = core_v1.delete_namespaced_pod("nb-1", NS)
    assert deleted.metadata.uid == pod.metadata.uid
    core_v1.delete_namespaced_service("nb-1", NS)
    core_v1.delete_namespaced_persistent_volume_claim("nb-1-data", NS)
    assert core_v1.list_namespaced_pod(NS).items == []
    assert core_v1.list_namespaced_service(NS).items == []
    assert core_v1.list_namespaced_persistent_volume_claim(NS).items == []


def test_duplicate_create_is_409_already_exists(core_v1):
    core_v1.create_namespaced_pod(NS, pod_body("nb-1"))
    exc = api_error(core_v1.create_namespaced_pod, NS, pod_body("nb-1"))
    assert exc.status == 409
    assert isinstance(exc, client.exceptions.ConflictException)
    status = core_v1.api_client.deserialize(exc.body, "V1Status", "application/json")
    assert (status.kind, status.status, status.reason, status.code) == ("Status", "Failure", "AlreadyExists", 409)
    assert status.message == 'pods "nb-1" already exists'
    assert status.details.name == "nb-1" and status.details.kind == "pods"
    core_v1.create_namespaced_service(NS, service_body("nb-1", {"a": "b"}))
    assert api_error(core_v1.create_namespaced_service, NS, service_body("nb-1", {"a": "b"})).status == 409
    core_v1.create_namespaced_persistent_volume_claim(NS, pvc_body("d"))
    assert api_error(core_v1.create_namespaced_persistent_volume_claim, NS, pvc_body("d")).status == 409
    # The same name in another namespace is another object.
    core_v1.create_namespaced_pod("other", pod_body("nb-1"))


def test_missing_objects_are_404_not_found(core_v1):
    for call in (core_v1.read_namespaced_pod, core_v1.delete_namespaced_pod, core_v1.read_namespaced_service):
        exc = api_error(call, "nope", NS)
        assert exc.status == 404 and isinstance(exc, client.exceptions.NotFoundException)
        status = core_v1.api_client.deserialize(exc.body, "V1Status", "application/json")
        assert (status.kind, status.reason, status.code) == ("Status", "NotFound", 404)
    exc = api_error(core_v1.read_namespaced_persistent_volume_claim, "nope", NS)
    assert message(exc) == 'persistentvolumeclaims "nope" not found'


def test_namespaces_can_be_restricted():
    with FakeKubeApiServer(namespaces=["nb"]) as fake:
        api = fake.core_v1()
        api.create_namespaced_pod("nb", pod_body("p"))
        exc = api_error(api.create_namespaced_pod, "elsewhere", pod_body("p"))
        assert exc.status == 404 and message(exc) == 'namespaces "elsewhere" not found'
        assert api.read_namespace("nb").status.phase == "Active"
        assert api_error(api.read_namespace, "elsewhere").status == 404
        api.create_namespace({"metadata": {"name": "elsewhere"}})
        api.create_namespaced_pod("elsewhere", pod_body("p"))
        assert api_error(api.create_namespace, {"metadata": {"name": "elsewhere"}}).status == 409
        api.api_client.close()


def test_invalid_objects_are_422_and_a_foreign_namespace_400(core_v1):
    exc = api_error(core_v1.create_namespaced_pod, NS, pod_body("Not_A_Name"))
    assert exc.status == 422 and '"Invalid"' in exc.body and "metadata.name" in exc.body
    exc = api_error(core_v1.create_namespaced_pod, NS, {"metadata": {"name": "p"}, "spec": {"containers": []}})
    assert exc.status == 422
    exc = api_error(core_v1.create_namespaced_service, NS, service_body("1-starts-with-a-digit", {"a": "b"}))
    assert exc.status == 422  # a Service name is a DNS-1035 label
    exc = api_error(core_v1.create_namespaced_pod, NS, pod_body("p", {"bad label": "x"}))
    assert exc.status == 422
    exc = api_error(core_v1.create_namespaced_pod, NS, pod_body("p", {"ok": "a" * 64}))
    assert exc.status == 422
    exc = api_error(core_v1.create_namespaced_pod, NS, pod_body("p", namespace="other"))
    assert exc.status == 400 and "does not match the namespace" in exc.body


def test_generate_name(core_v1):
    pod = core_v1.create_namespaced_pod(NS, {**pod_body(""), "metadata": {"generateName": "nb-"}})
    assert pod.metadata.name.startswith("nb-") and len(pod.metadata.name) == 8


# --- selectors and resourceVersion ---------------------------------------------------------------------------------


def test_label_selectors(core_v1):
    core_v1.create_namespaced_pod(NS, pod_body("a", {"app": "nb", "tier": "gpu"}))
    core_v1.create_namespaced_pod(NS, pod_body("b", {"app": "nb", "tier": "cpu"}))
    core_v1.create_namespaced_pod(NS, pod_body("c", {"app": "other"}))

    def names(selector: str) -> list[str]:
        return [p.metadata.name for p in core_v1.list_namespaced_pod(NS, label_selector=selector).items]

    assert names("app=nb") == ["a", "b"]
    assert names("app==nb,tier=cpu") == ["b"]
    assert names("app=nb,tier=tpu") == []
    assert names("tier!=cpu") == ["a", "c"]  # also the Pod without the label
    assert names("tier in (gpu, cpu)") == ["a", "b"]
    assert names("tier notin (gpu)") == ["b", "c"]
    assert names("tier") == ["a", "b"]
    assert names("!tier") == ["c"]
    assert names("") == ["a", "b", "c"]
    exc = api_error(core_v1.list_namespaced_pod, NS, label_selector="app=nb=x")
    assert exc.status == 400
    assert [p.metadata.name for p in core_v1.list_namespaced_pod(NS, field_selector="metadata.name=b").items] == ["b"]
    assert api_error(core_v1.list_namespaced_pod, NS, field_selector="spec.whatever=1").status == 400


def test_resource_version_is_one_increasing_counter_for_every_kind(core_v1, fake_kube):
    versions = []
    versions.append(core_v1.create_namespaced_pod(NS, pod_body("p", {"app": "x"})).metadata.resource_version)
    versions.append(core_v1.create_namespaced_service(NS, service_body("s", {"app": "x"})).metadata.resource_version)
    versions.append(core_v1.create_namespaced_persistent_volume_claim(NS, pvc_body("d")).metadata.resource_version)
    versions.append(fake_kube.schedule(NS, "p")["metadata"]["resourceVersion"])
    patched = core_v1.patch_namespaced_pod(
        "p", NS, {"metadata": {"labels": {"x": "y"}}}, _content_type="application/merge-patch+json"
    )
    versions.append(patched.metadata.resource_version)
    ints = [int(v) for v in versions]
    assert all(isinstance(v, str) for v in versions)
    assert ints == sorted(ints) and len(set(ints)) == len(ints)
    # A read does not change it; the list's resourceVersion is the latest (the Scheduled Event came after the
    # schedule's MODIFIED).
    assert core_v1.read_namespaced_pod("p", NS).metadata.resource_version == versions[-1]
    assert int(core_v1.list_namespaced_pod(NS).metadata.resource_version) == fake_kube.resource_version


# --- update --------------------------------------------------------------------------------------------------------


def test_patch_and_replace(core_v1):
    pod = core_v1.create_namespaced_pod(NS, pod_body("p", {"app": "nb"}))
    merged = core_v1.patch_namespaced_pod(
        "p", NS, {"metadata": {"annotations": {"a": "1"}}}, _content_type="application/merge-patch+json"
    )
    assert merged.metadata.annotations == {"a": "1"} and merged.metadata.labels == {"app": "nb"}
    patched = core_v1.patch_namespaced_pod(
        "p", NS, [{"op": "add", "path": "/metadata/labels/tier", "value": "gpu"}]
    )  # a list: application/json-patch+json, the client's default
    assert patched.metadata.labels == {"app": "nb", "tier": "gpu"}
    # A dict without a content type: the client sends a strategic merge patch.
    patched = core_v1.patch_namespaced_pod("p", NS, {"metadata": {"labels": {"x": "y"}}})
    assert patched.metadata.labels == {"app": "nb", "tier": "gpu", "x": "y"}
    # Pod specs are immutable but for images.
    exc = api_error(
        core_v1.patch_namespaced_pod,
        "p",
        NS,
        {"spec": {"restartPolicy": "Never"}},
        _content_type="application/merge-patch+json",
    )
    assert exc.status == 422
    # PUT with a stale resourceVersion: 409 Conflict.
    stale = pod.to_dict()
    exc = api_error(core_v1.replace_namespaced_pod, "p", NS, client.V1Pod.from_dict(stale))
    assert exc.status == 409 and '"Conflict"' in exc.body
    current = core_v1.read_namespaced_pod("p", NS)
    current.metadata.labels["new"] = "1"
    replaced = core_v1.replace_namespaced_pod("p", NS, current)
    assert replaced.metadata.labels["new"] == "1"
    assert int(replaced.metadata.resource_version) > int(current.metadata.resource_version)


# --- watch ---------------------------------------------------------------------------------------------------------


def test_watch_from_a_resource_version_sees_exactly_the_later_events_in_order(core_v1, fake_kube):
    core_v1.create_namespaced_pod(NS, pod_body("before"))
    start = core_v1.list_namespaced_pod(NS).metadata.resource_version
    core_v1.create_namespaced_pod(NS, pod_body("nb-1"))
    core_v1.create_namespaced_service(NS, service_body("nb-1", {"app": "nb"}))  # another kind: not in this watch
    fake_kube.run(NS, "nb-1")  # MODIFIED (scheduled), MODIFIED (kubelet admits), MODIFIED (Running)
    core_v1.delete_namespaced_pod("nb-1", NS)
    core_v1.create_namespaced_pod("other", pod_body("elsewhere"))  # another namespace: not in this watch

    w = watch.Watch()
    stream = w.stream(core_v1.list_namespaced_pod, NS, resource_version=start, timeout_seconds=5)
    events = collect(stream, w, 5)
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "nb-1"),
        ("MODIFIED", "nb-1"),
        ("MODIFIED", "nb-1"),
        ("MODIFIED", "nb-1"),
        ("DELETED", "nb-1"),
    ]
    assert events[0]["object"].status.phase == "Pending"
    assert events[1]["object"].spec.node_name == "fake-node"
    assert events[3]["object"].status.phase == "Running"
    rvs = [int(e["object"].metadata.resource_version) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(start)
    assert isinstance(events[0]["object"], client.V1Pod)


def test_watch_follows_live_changes_and_a_status_change_through_the_kubelet_api(core_v1, fake_kube):
    core_v1.create_namespaced_pod(NS, pod_body("nb-1"))
    start = core_v1.read_namespaced_pod("nb-1", NS).metadata.resource_version

    def later():
        time.sleep(0.2)
        fake_kube.unschedulable(NS, "nb-1", "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
        fake_kube.schedule(NS, "nb-1")  # a node turned up

    thread = threading.Thread(target=later)
    thread.start()
    w = watch.Watch()
    events = collect(w.stream(core_v1.list_namespaced_pod, NS, resource_version=start, timeout_seconds=5), w, 2)
    thread.join(5)
    assert [e["type"] for e in events] == ["MODIFIED", "MODIFIED"]
    first = {c.type: c for c in events[0]["object"].status.conditions}["PodScheduled"]
    assert (first.status, first.reason, first.message) == (
        "False",
        "Unschedulable",
        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
    )
    second = {c.type: c for c in events[1]["object"].status.conditions}["PodScheduled"]
    assert (second.status, second.reason) == ("True", None)
    assert events[1]["object"].spec.node_name == "fake-node"


def test_watch_without_a_resource_version_starts_with_the_current_objects(core_v1, fake_kube):
    core_v1.create_namespaced_pod(NS, pod_body("a"))
    core_v1.create_namespaced_pod(NS, pod_body("b"))
    core_v1.delete_namespaced_pod("a", NS)
    w = watch.Watch()
    events = collect(w.stream(core_v1.list_namespaced_pod, NS, timeout_seconds=5), w, 1)
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "b")]


def test_watch_with_a_label_selector_sees_objects_enter_and_leave_it(core_v1, fake_kube):
    start = core_v1.create_namespaced_pod(NS, pod_body("p", {"app": "other"})).metadata.resource_version
    core_v1.patch_namespaced_pod(
        "p", NS, {"metadata": {"labels": {"app": "nb"}}}, _content_type="application/merge-patch+json"
    )
    fake_kube.schedule(NS, "p")
    core_v1.patch_namespaced_pod(
        "p", NS, {"metadata": {"labels": {"app": "gone"}}}, _content_type="application/merge-patch+json"
    )
    w = watch.Watch()
    events = collect(
        w.stream(core_v1.list_namespaced_pod, NS, label_selector="app=nb", resource_version=start, timeout_seconds=5),
        w,
        3,
    )
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert events[2]["object"].metadata.labels == {"app": "nb"}  # the last content that matched


def test_bookmarks_arrive_with_the_current_resource_version(core_v1, fake_kube):
    pod = core_v1.create_namespaced_pod(NS, pod_body("p"))
    w = watch.Watch()
    stream = w.stream(
        core_v1.list_namespaced_pod,
        NS,
        resource_version=pod.metadata.resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    )
    started = time.monotonic()
    events = collect(stream, w, 2, types=("BOOKMARK",))
    assert time.monotonic() - started < 3
    assert all(e["raw_object"]["kind"] == "Pod" for e in events)
    assert events[-1]["raw_object"]["metadata"]["resourceVersion"] == str(fake_kube.resource_version)
    assert w.resource_version == str(fake_kube.resource_version)  # the client keeps it for a resumption
    wait_until(lambda: not fake_kube._subscribers)  # the server noticed the client went away


def test_no_bookmarks_unless_asked(core_v1, fake_kube):
    pod = core_v1.create_namespaced_pod(NS, pod_body("p"))
    w = watch.Watch()
    events = list(
        w.stream(core_v1.list_namespaced_pod, NS, resource_version=pod.metadata.resource_version, timeout_seconds=1)
    )
    assert events == []


def test_a_too_old_resource_version_is_410_gone(core_v1, fake_kube):
    old = core_v1.create_namespaced_pod(NS, pod_body("p")).metadata.resource_version
    fake_kube.schedule(NS, "p")
    fake_kube.compact()
    # With timeout_seconds the client does not retry: the ERROR event becomes ApiException 410 at once.
    w = watch.Watch()
    exc = api_error(lambda: list(w.stream(core_v1.list_namespaced_pod, NS, resource_version=old, timeout_seconds=5)))
    assert exc.status == 410 and exc.reason.startswith("Expired: too old resource version")
    # Without, it retries once from the same resourceVersion, then raises.
    fake_kube.requests.clear()
    exc = api_error(lambda: list(watch.Watch().stream(core_v1.list_namespaced_pod, NS, resource_version=old)))
    assert exc.status == 410
    assert len([r for r in fake_kube.requests if "watch=true" in r[1]]) == 2
    # Raw, the stream is HTTP 200 with one ERROR event carrying a Status.
    resp = core_v1.list_namespaced_pod(NS, watch=True, resource_version=old, _preload_content=False)
    assert resp.status == 200
    event = json.loads(resp.data.decode().strip())
    assert event["type"] == "ERROR"
    assert {k: event["object"][k] for k in ("kind", "status", "reason", "code")} == {
        "kind": "Status",
        "status": "Failure",
        "reason": "Expired",
        "code": 410,
    }
    # A resourceVersion from after the compaction still works.
    now = core_v1.list_namespaced_pod(NS).metadata.resource_version
    assert list(watch.Watch().stream(core_v1.list_namespaced_pod, NS, resource_version=now, timeout_seconds=1)) == []


def test_history_is_bounded():
    with FakeKubeApiServer(history=3) as fake:
        api = fake.core_v1()
        first = api.create_namespaced_pod(NS, pod_body("p0")).metadata.resource_version
        for i in range(1, 5):
            api.create_namespaced_pod(NS, pod_body(f"p{i}"))
        w = watch.Watch()
        exc = api_error(lambda: list(w.stream(api.list_namespaced_pod, NS, resource_version=first, timeout_seconds=2)))
        assert exc.status == 410
        recent = str(fake.resource_version - 2)
        w = watch.Watch()
        events = collect(w.stream(api.list_namespaced_pod, NS, resource_version=recent, timeout_seconds=2), w, 2)
        assert [e["object"].metadata.name for e in events] == ["p3", "p4"]
        api.api_client.close()


# --- deletion and garbage collection -------------------------------------------------------------------------------


def test_deleting_an_owner_deletes_its_dependents(core_v1):
    pod = core_v1.create_namespaced_pod(NS, pod_body("nb-1", {"app": "nb-1"}))
    core_v1.create_namespaced_service(
        NS, service_body("nb-1", {"app": "nb-1"}, ownerReferences=[owner_ref(pod, "Pod")])
    )
    core_v1.create_namespaced_persistent_volume_claim(
        NS, pvc_body("nb-1-data", ownerReferences=[owner_ref(pod, "Pod")])
    )
    core_v1.create_namespaced_service(NS, service_body("unrelated", {"app": "x"}))
    start = core_v1.list_namespaced_pod(NS).metadata.resource_version
    core_v1.delete_namespaced_pod("nb-1", NS)
    assert [s.metadata.name for s in core_v1.list_namespaced_service(NS).items] == ["unrelated"]
    assert core_v1.list_namespaced_persistent_volume_claim(NS).items == []
    # Background: the owner's DELETED comes first.
    w = watch.Watch()
    events = collect(w.stream(core_v1.list_service_for_all_namespaces, resource_version=start, timeout_seconds=5), w, 1)
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("DELETED", "nb-1")]
    assert int(events[0]["object"].metadata.resource_version) > int(start) + 1


def test_cascade_foreground_orphan_and_other_owners(core_v1, fake_kube):
    owner = core_v1.create_namespaced_config_map(NS, {"metadata": {"name": "owner"}})
    other = core_v1.create_namespaced_config_map(NS, {"metadata": {"name": "other-owner"}})
    core_v1.create_namespaced_pod(NS, pod_body("only", ownerReferences=[owner_ref(owner, "ConfigMap")]))
    core_v1.create_namespaced_pod(
        NS, pod_body("shared", ownerReferences=[owner_ref(owner, "ConfigMap"), owner_ref(other, "ConfigMap")])
    )
    start = fake_kube.resource_version
    core_v1.delete_namespaced_config_map("owner", NS, propagation_policy="Foreground")
    assert [p.metadata.name for p in core_v1.list_namespaced_pod(NS).items] == ["shared"]  # it has another owner
    deleted = [(c.type, c.plural, c.obj["metadata"]["name"]) for c in fake_kube._log if c.rv > start]
    assert deleted == [("DELETED", "pods", "only"), ("DELETED", "configmaps", "owner")]  # dependents first

    core_v1.delete_namespaced_config_map("other-owner", NS, body=client.V1DeleteOptions(propagation_policy="Orphan"))
    shared = core_v1.read_namespaced_pod("shared", NS)
    assert [r.name for r in shared.metadata.owner_references] == ["owner"]  # the orphaning removed its reference


def test_delete_collection_with_a_label_selector(core_v1):
    core_v1.create_namespaced_pod(NS, pod_body("a", {"app": "nb"}))
    core_v1.create_namespaced_pod(NS, pod_body("b", {"app": "other"}))
    core_v1.delete_collection_namespaced_pod(NS, label_selector="app=nb")
    assert [p.metadata.name for p in core_v1.list_namespaced_pod(NS).items] == ["b"]


def test_graceful_pod_deletion_keeps_the_name_taken_until_it_ends():
    with FakeKubeApiServer(pod_termination_seconds=0.5) as fake:
        api = fake.core_v1()
        api.create_namespaced_pod(NS, pod_body("p"))
        fake.run(NS, "p")
        terminating = api.delete_namespaced_pod("p", NS)
        assert terminating.metadata.deletion_timestamp is not None
        assert terminating.metadata.deletion_grace_period_seconds == 30
        assert api_error(api.create_namespaced_pod, NS, pod_body("p")).status == 409
        with pytest.raises(FakeApiError) as info:
            fake.run(NS, "p")  # nothing starts a Terminating Pod
        assert info.value.code == 409
        wait_until(lambda: not fake.exists("pods", NS, "p"), timeout=5)
        api.create_namespaced_pod(NS, pod_body("p"))
        # gracePeriodSeconds=0 deletes at once.
        fake.run(NS, "p")
        api.delete_namespaced_pod("p", NS, grace_period_seconds=0)
        assert not fake.exists("pods", NS, "p")
        # The garbage collector's deletions are graceful too.
        owner = api.create_namespaced_config_map(NS, {"metadata": {"name": "owner"}})
        api.create_namespaced_pod(NS, pod_body("p", ownerReferences=[owner_ref(owner, "ConfigMap")]))
        fake.run(NS, "p")
        api.delete_namespaced_config_map("owner", NS)
        assert api.read_namespaced_pod("p", NS).metadata.deletion_timestamp is not None
        fake.finish_termination(NS, "p")
        assert not fake.exists("pods", NS, "p")
        api.api_client.close()


def test_a_pvc_in_use_stays_terminating_until_its_pod_is_gone(core_v1, fake_kube):
    pvc = core_v1.create_namespaced_persistent_volume_claim(NS, pvc_body("data"))
    assert pvc.metadata.finalizers == ["kubernetes.io/pvc-protection"]
    body = pod_body("p")
    body["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    core_v1.create_namespaced_pod(NS, body)
    start = fake_kube.resource_version
    terminating = core_v1.delete_namespaced_persistent_volume_claim("data", NS)
    assert terminating.metadata.deletion_timestamp is not None
    assert core_v1.read_namespaced_persistent_volume_claim("data", NS).metadata.deletion_timestamp is not None
    assert api_error(core_v1.create_namespaced_persistent_volume_claim, NS, pvc_body("data")).status == 409
    core_v1.delete_namespaced_pod("p", NS)
    assert api_error(core_v1.read_namespaced_persistent_volume_claim, "data", NS).status == 404
    w = watch.Watch()
    stream = w.stream(
        core_v1.list_namespaced_persistent_volume_claim, NS, resource_version=str(start), timeout_seconds=5
    )
    assert [e["type"] for e in collect(stream, w, 2)] == ["MODIFIED", "DELETED"]
    # One no Pod uses goes at once.
    core_v1.create_namespaced_persistent_volume_claim(NS, pvc_body("free"))
    core_v1.delete_namespaced_persistent_volume_claim("free", NS)
    assert not fake_kube.exists("persistentvolumeclaims", NS, "free")


def test_finalizers_hold_a_deletion_until_removed(core_v1, fake_kube):
    core_v1.create_namespaced_persistent_volume_claim(NS, pvc_body("d", finalizers=["example.com/hold"]))
    held = core_v1.delete_namespaced_persistent_volume_claim("d", NS)
    assert held.metadata.deletion_timestamp is not None
    assert fake_kube.exists("persistentvolumeclaims", NS, "d")
    assert core_v1.read_namespaced_persistent_volume_claim("d", NS).metadata.finalizers == ["example.com/hold"]
    start = fake_kube.resource_version
    core_v1.patch_namespaced_persistent_volume_claim("d", NS, [{"op": "remove", "path": "/metadata/finalizers"}])
    assert not fake_kube.exists("persistentvolumeclaims", NS, "d")
    w = watch.Watch()
    stream = w.stream(
        core_v1.list_namespaced_persistent_volume_claim, NS, resource_version=str(start), timeout_seconds=5
    )
    assert [e["type"] for e in collect(stream, w, 1)] == ["DELETED"]  # removing the last finalizer deletes it


# --- the kubelet API and Events ------------------------------------------------------------------------------------


def reasons(core_v1, name: str) -> list[tuple[str, str]]:
    events = core_v1.list_namespaced_event(NS, field_selector=f"involvedObject.name={name}").items
    assert all(e.involved_object.name == name for e in events)
    return sorted((e.reason, e.type) for e in events)


def test_run_makes_the_pod_running_with_kubelet_events(core_v1, fake_kube):
    core_v1.create_namespaced_pod(NS, pod_body("nb-1"))
    core_v1.create_namespaced_pod(NS, pod_body("nb-2"))
    fake_kube.run(NS, "nb-1")
    pod = core_v1.read_namespaced_pod("nb-1", NS)
    assert pod.status.phase == "Running" and pod.status.pod_ip and pod.spec.node_name == "fake-node"
    assert pod.status.container_statuses[0].ready and pod.status.container_statuses[0].state.running
    assert all(c.status == "True" for c in pod.status.conditions)
    assert reasons(core_v1, "nb-1") == sorted(
        [
            ("Scheduled", "Normal"),
            ("Pulling", "Normal"),
            ("Pulled", "Normal"),
            ("Created", "Normal"),
            ("Started", "Normal"),
        ]
    )
    assert [e["reason"] for e in fake_kube.events_for(NS, "nb-1")] == [
        "Scheduled",
        "Pulling",
        "Pulled",
        "Created",
        "Started",
    ]
    assert reasons(core_v1, "nb-2") == []
    scheduled = core_v1.list_namespaced_event(NS, field_selector="involvedObject.name=nb-1,reason=Scheduled").items
    assert scheduled[0].source.component == "default-scheduler"
    assert scheduled[0].involved_object.uid == pod.metadata.uid and scheduled[0].involved_object.kind == "Pod"
    fake_kube.set_ready(NS, "nb-1", False)
    assert core_v1.read_namespaced_pod("nb-1", NS).status.container_statuses[0].ready is False


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff"])
def test_failed_image_pulls(core_v1, fake_kube, reason):
    core_v1.create_namespaced_pod(NS, pod_body("p"))
    fake_kube.fail_image_pull(NS, "p", reason)
    pod = core_v1.read_namespaced_pod("p", NS)
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].state.waiting.reason == reason
    failed = [
        e
        for e in core_v1.list_namespaced_event(NS, field_selector="involvedObject.name=p").items
        if e.reason == "Failed"
    ]
    assert all(e.type == "Warning" for e in failed)
    messages = {e.message for e in failed}
    assert "Error: ErrImagePull" in messages
    assert ("Error: ImagePullBackOff" in messages) == (reason == "ImagePullBackOff")


def test_unschedulable(core_v1, fake_kube):
    core_v1.create_namespaced_pod(NS, pod_body("p"))
    fake_kube.unschedulable(NS, "p")
    pod = core_v1.read_namespaced_pod("p", NS)
    assert pod.status.phase == "Pending" and not pod.spec.node_name
    cond = pod.status.conditions[0]
    assert (cond.type, cond.status, cond.reason) == ("PodScheduled", "False", "Unschedulable")
    assert reasons(core_v1, "p") == [("FailedScheduling", "Warning")]
    fake_kube.unschedulable(NS, "p")  # the same again: the Event's count goes up
    events = core_v1.list_namespaced_event(NS, field_selector="involvedObject.name=p").items
    assert [e.count for e in events] == [2]


def test_oom_kill_restarts_or_fails_per_restart_policy(core_v1, fake_kube):
    core_v1.create_namespaced_pod(NS, pod_body("always"))
    fake_kube.run(NS, "always")
    fake_kube.oom_kill(NS, "always")
    status = core_v1.read_namespaced_pod("always", NS).status
    cs = status.container_statuses[0]
    assert status.phase == "Running" and cs.restart_count == 1 and cs.state.running and cs.ready
    assert cs.last_state.terminated.reason == "OOMKilled" and cs.last_state.terminated.exit_code == 137

    body = pod_body("never")
    body["spec"]["restartPolicy"] = "Never"
    core_v1.create_namespaced_pod(NS, body)
    fake_kube.run(NS, "never")
    fake_kube.oom_kill(NS, "never")
    status = core_v1.read_namespaced_pod("never", NS).status
    assert status.phase == "Failed"
    assert status.container_statuses[0].state.terminated.reason == "OOMKilled"
    assert ("OOMKilled", "Warning") in reasons(core_v1, "never")


def test_terminate(core_v1, fake_kube):
    body = pod_body("job")
    body["spec"]["restartPolicy"] = "OnFailure"
    core_v1.create_namespaced_pod(NS, body)
    fake_kube.run(NS, "job")
    fake_kube.terminate(NS, "job", exit_code=1)
    assert core_v1.read_namespaced_pod("job", NS).status.container_statuses[0].restart_count == 1
    fake_kube.terminate(NS, "job", exit_code=0)
    assert core_v1.read_namespaced_pod("job", NS).status.phase == "Succeeded"


def test_crash_loop_backs_off_and_can_recover(core_v1, fake_kube):
    core_v1.create_namespaced_pod(NS, pod_body("p"))
    fake_kube.crash_loop(NS, "p")
    fake_kube.crash_loop(NS, "p", exit_code=2)
    pod = core_v1.read_namespaced_pod("p", NS)
    cs = pod.status.container_statuses[0]
    assert pod.status.phase == "Running" and not cs.ready and cs.restart_count == 2
    assert cs.state.waiting.reason == "CrashLoopBackOff" and cs.state.waiting.message.startswith("back-off 20s ")
    assert (cs.last_state.terminated.reason, cs.last_state.terminated.exit_code) == ("Error", 2)
    backoffs = [
        e for e in core_v1.list_namespaced_event(NS, field_selector="involvedObject.name=p,reason=BackOff").items
    ]
    assert [(e.type, e.count) for e in backoffs] == [("Warning", 2)]
    fake_kube.run(NS, "p")  # fixed: it starts
    cs = core_v1.read_namespaced_pod("p", NS).status.container_statuses[0]
    assert cs.ready and cs.state.running and cs.restart_count == 2


def test_eviction(core_v1, fake_kube):
    stopped = []
    fake_kube.on_run = lambda pod, services: None
    fake_kube.on_stop = lambda pod: stopped.append(pod["metadata"]["name"])
    core_v1.create_namespaced_pod(NS, pod_body("p"))
    fake_kube.run(NS, "p")
    fake_kube.evict(NS, "p")
    pod = core_v1.read_namespaced_pod("p", NS)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "Evicted")
    assert "low on resource: memory" in pod.status.message
    assert pod.status.container_statuses[0].state.terminated.exit_code == 137
    assert {c.type: c.status for c in pod.status.conditions}["DisruptionTarget"] == "True"
    assert [e["reason"] for e in fake_kube.events_for(NS, "p")][-2:] == ["Evicted", "Killing"]
    assert stopped == ["p"]
    with pytest.raises(ValueError):
        fake_kube.run(NS, "p")


def test_kubelet_calls_for_a_missing_pod_raise_404_and_nonsense_value_error(core_v1, fake_kube):
    with pytest.raises(FakeApiError) as info:
        fake_kube.run(NS, "nope")
    assert info.value.code == 404
    core_v1.create_namespaced_pod(NS, pod_body("p"))
    with pytest.raises(ValueError):
        fake_kube.oom_kill(NS, "p")  # not running
    running = fake_kube.run(NS, "p")
    assert fake_kube.run(NS, "p") == running  # already running: nothing happens
    with pytest.raises(ValueError):
        fake_kube.unschedulable(NS, "p")  # already scheduled


# --- auto policies and the on_run hook -----------------------------------------------------------------------------


def test_auto_policy_lets_pods_start_by_themselves(core_v1, fake_kube):
    fake_kube.auto = run_after(0.05)
    start = core_v1.create_namespaced_pod(NS, pod_body("p")).metadata.resource_version
    w = watch.Watch()
    for event in w.stream(core_v1.list_namespaced_pod, NS, resource_version=start, timeout_seconds=5):
        if event["object"].status.phase == "Running":
            w.stop()
            break
    else:
        pytest.fail("the Pod did not start")
    # A Pod deleted before its policy runs is simply skipped (no error).
    fake_kube.auto = run_after(0.2)
    core_v1.create_namespaced_pod(NS, pod_body("gone"))
    core_v1.delete_namespaced_pod("gone", NS)
    time.sleep(0.4)


def waiting_reason(pod: Any) -> str | None:
    statuses = pod.status.container_statuses or []
    return statuses[0].state.waiting.reason if statuses and statuses[0].state.waiting else None


def scheduled_reason(pod: Any) -> str | None:
    return next((c.reason for c in pod.status.conditions or [] if c.type == "PodScheduled"), None)


@pytest.mark.parametrize(
    ("policy", "check", "expected"),
    [
        (fail_image_pull_after(0.0), waiting_reason, "ImagePullBackOff"),
        (fail_image_pull_after(0.0, "ErrImagePull"), waiting_reason, "ErrImagePull"),
        (unschedulable_after(0.0), scheduled_reason, "Unschedulable"),
        (crash_loop_after(0.0), waiting_reason, "CrashLoopBackOff"),
    ],
)
def test_other_auto_policies(core_v1, fake_kube, policy, check, expected):
    fake_kube.auto = policy
    core_v1.create_namespaced_pod(NS, pod_body("p"))
    wait_until(lambda: check(core_v1.read_namespaced_pod("p", NS)) == expected)


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = b"hello from the pod"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_on_run_points_the_service_at_the_local_process(core_v1, fake_kube):
    servers: dict[str, http.server.ThreadingHTTPServer] = {}
    stopped: list[str] = []

    def on_run(pod, services):
        assert [s["metadata"]["name"] for s in services] == ["nb-1"]
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[pod["metadata"]["name"]] = server
        return "127.0.0.1", server.server_address[1]

    def on_stop(pod):
        stopped.append(pod["metadata"]["name"])
        server = servers.pop(pod["metadata"]["name"])
        server.shutdown()
        server.server_close()

    fake_kube.on_run, fake_kube.on_stop = on_run, on_stop
    fake_kube.auto = run_after(0.0)
    core_v1.create_namespaced_service(NS, service_body("nb-1", {"app": "nb-1"}))
    core_v1.create_namespaced_pod(NS, pod_body("nb-1", {"app": "nb-1"}))
    wait_until(lambda: core_v1.read_namespaced_pod("nb-1", NS).status.phase == "Running")
    svc = core_v1.read_namespaced_service("nb-1", NS)
    assert svc.spec.cluster_ip == "127.0.0.1"
    port = svc.spec.ports[0].port
    assert port == servers["nb-1"].server_address[1]
    with urllib.request.urlopen(f"http://{svc.spec.cluster_ip}:{port}/", timeout=5) as resp:
        assert resp.read() == b"hello from the pod"
    # A Service created after the Pod runs gets the address at once.
    late = core_v1.create_namespaced_service(NS, service_body("nb-1-late", {"app": "nb-1"}))
    assert (late.spec.cluster_ip, late.spec.ports[0].port) == ("127.0.0.1", port)

    core_v1.delete_namespaced_pod("nb-1", NS)
    wait_until(lambda: stopped == ["nb-1"])
    assert servers == {}


# --- patches, subresources, configuration --------------------------------------------------------------------------


def test_strategic_merge_patch_merges_lists_by_key(core_v1):
    body = pod_body("p")
    body["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    body["spec"]["containers"].append({"name": "sidecar", "image": "registry.local/sidecar:1"})
    core_v1.create_namespaced_pod(NS, body)
    patched = core_v1.patch_namespaced_pod(
        "p", NS, {"spec": {"containers": [{"name": "sidecar", "image": "registry.local/sidecar:2"}]}}
    )  # only an image may change in a Pod's spec
    assert [(c.name, c.image) for c in patched.spec.containers] == [
        ("notebook", "registry.local/notebook:1.0"),
        ("sidecar", "registry.local/sidecar:2"),
    ]
    assert [e.name for e in patched.spec.containers[0].env] == ["A", "B"]
    svc = core_v1.create_namespaced_service(NS, service_body("s", {"a": "b"}, labels={"x": "1"}))
    patched = core_v1.patch_namespaced_service(
        "s", NS, {"metadata": {"labels": {"x": None, "y": "2"}}, "spec": {"ports": [{"port": 22, "name": "ssh"}]}}
    )
    assert patched.metadata.labels == {"y": "2"}
    assert sorted(p.port for p in patched.spec.ports) == [22, 8888]
    assert patched.spec.cluster_ip == svc.spec.cluster_ip
    exc = api_error(core_v1.patch_namespaced_service, "s", NS, {"spec": {"clusterIP": "10.0.0.1"}})
    assert exc.status == 422  # immutable


def test_status_subresource(core_v1, fake_kube):
    core_v1.create_namespaced_pod(NS, pod_body("p"))
    fake_kube.run(NS, "p")
    assert core_v1.read_namespaced_pod_status("p", NS).status.phase == "Running"
    # Status in a patch of the main resource is ignored; through /status it applies.
    core_v1.patch_namespaced_pod("p", NS, {"status": {"phase": "Failed"}})
    assert core_v1.read_namespaced_pod("p", NS).status.phase == "Running"
    core_v1.patch_namespaced_pod_status("p", NS, {"status": {"phase": "Failed"}})
    assert core_v1.read_namespaced_pod("p", NS).status.phase == "Failed"


def test_deleting_a_running_pod_records_killing(core_v1, fake_kube):
    core_v1.create_namespaced_pod(NS, pod_body("p"))
    fake_kube.run(NS, "p")
    core_v1.delete_namespaced_pod("p", NS)
    assert [e["reason"] for e in fake_kube.events_for(NS, "p")][-1] == "Killing"


def test_load_kube_config_and_version(fake_kube, tmp_path):
    from kubernetes import config

    path = fake_kube.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    api_client = config.new_client_from_config(config_file=path)
    try:
        assert client.VersionApi(api_client).get_code().git_version.startswith("v1.32")
        assert client.CoreV1Api(api_client).list_namespaced_pod(NS).items == []
    finally:
        api_client.close()


def test_stopping_the_fake_stops_what_on_run_started():
    started: list[str] = []
    stopped: list[str] = []

    def on_run(pod, services):
        started.append(pod["metadata"]["name"])
        return None  # no address: the Services keep theirs

    with FakeKubeApiServer(on_run=on_run, on_stop=lambda pod: stopped.append(pod["metadata"]["name"])) as fake:
        api = fake.core_v1()
        api.create_namespaced_pod(NS, pod_body("a"))
        api.create_namespaced_pod(NS, pod_body("b"))
        fake.run(NS, "a")
        fake.run(NS, "b")
        fake.oom_kill(NS, "b")  # on_stop, then on_run again for the restart
        assert (started, stopped) == (["a", "b", "b"], ["b"])
        fake.auto = run_after(5.0)  # still asleep when the fake stops: never runs
        api.create_namespaced_pod(NS, pod_body("c"))
        api.api_client.close()
    assert sorted(stopped) == ["a", "b", "b"] and started == ["a", "b", "b"]
    assert fake.errors == []


def test_injected_failures(core_v1, fake_kube):
    fake_kube.inject_failure(
        method="POST",
        plural="pods",
        code=403,
        reason="Forbidden",
        message='pods "p" is forbidden: exceeded quota: compute, requested: limits.cpu=1, used: limits.cpu=8, '
        "limited: limits.cpu=8",
    )
    exc = api_error(core_v1.create_namespaced_pod, NS, pod_body("p"))
    assert exc.status == 403 and "exceeded quota" in message(exc)
    core_v1.create_namespaced_pod(NS, pod_body("p"))  # once only
    fake_kube.inject_failure(watch=True, code=500, times=-1)
    core_v1.list_namespaced_pod(NS)  # not a watch
    for _ in range(2):
        exc = api_error(lambda: list(watch.Watch().stream(core_v1.list_namespaced_pod, NS, timeout_seconds=1)))
        assert exc.status == 500
    fake_kube.clear_failures()
    assert list(watch.Watch().stream(core_v1.list_namespaced_service, NS, timeout_seconds=1)) == []


def test_dropped_watches_resume_from_the_last_resource_version(core_v1, fake_kube):
    seen: list[str] = []
    w = watch.Watch()

    def watching():
        # No timeout_seconds: the client reconnects by itself when the stream ends.
        for event in w.stream(core_v1.list_namespaced_pod, NS, resource_version=str(fake_kube.resource_version)):
            seen.append(event["object"].metadata.name)
            if len(seen) == 2:
                w.stop()
                break

    thread = threading.Thread(target=watching, daemon=True)
    thread.start()
    wait_until(lambda: fake_kube.open_watches == 1)
    first = core_v1.create_namespaced_pod(NS, pod_body("a")).metadata.resource_version
    wait_until(lambda: seen == ["a"])
    fake_kube.drop_watches()
    wait_until(lambda: len([r for r in fake_kube.requests if "watch=true" in r[1]]) == 2)
    assert f"resourceVersion={first}" in fake_kube.requests[-1][1]
    core_v1.create_namespaced_pod(NS, pod_body("b"))
    thread.join(5)
    assert not thread.is_alive() and seen == ["a", "b"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_works_against_it(fake_kube, tmp_path):
    """Go's client (kubectl: discovery, lists, describe, delete) accepts the fake as well."""
    fake_kube.create("pods", NS, pod_body("p"))
    fake_kube.run(NS, "p")
    env = dict(os.environ, KUBECONFIG=fake_kube.write_kubeconfig(tmp_path / "kubeconfig", NS), HOME=str(tmp_path))

    def kubectl(*args: str) -> str:
        done = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert kubectl("get", "pod", "p", "-o", "jsonpath={.status.phase}") == "Running"
    described = kubectl("describe", "pod", "p")
    events = [line.split()[1] for line in described.split("Events:")[1].splitlines()[3:] if line.strip()]
    assert events == ["Scheduled", "Pulling", "Pulled", "Created", "Started"]
    assert "p" in kubectl("delete", "pod", "p", "--wait=true")
    assert not fake_kube.exists("pods", NS, "p")


def test_every_object_the_fake_makes_matches_the_api_schemas(fake_kube):
    """Pods in every state the kubelet API produces, Services, PVCs, ConfigMaps, Secrets and Events are valid
    against the Kubernetes OpenAPI schemas, strictly (no field the API does not have)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = []

    def keep(plural: str, name: str) -> None:
        docs.append(fake_kube.get(plural, NS, name))

    fake_kube.create("pods", NS, pod_body("p", {"app": "p"}))
    keep("pods", "p")
    fake_kube.create("services", NS, service_body("s", {"app": "p"}))
    fake_kube.create("persistentvolumeclaims", NS, pvc_body("d"))
    fake_kube.create("configmaps", NS, {"metadata": {"name": "c"}, "data": {"a": "b"}})
    fake_kube.create("secrets", NS, {"metadata": {"name": "x"}, "stringData": {"a": "b"}})
    for plural, name in (("services", "s"), ("persistentvolumeclaims", "d"), ("configmaps", "c"), ("secrets", "x")):
        keep(plural, name)
    for step in (fake_kube.unschedulable, fake_kube.run, fake_kube.oom_kill, fake_kube.crash_loop):
        step(NS, "p")
        keep("pods", "p")
    fake_kube.set_ready(NS, "p", False)
    keep("pods", "p")
    for name, steps in (
        ("q", [fake_kube.fail_image_pull]),
        ("r", [fake_kube.run, fake_kube.evict]),
        ("t", [fake_kube.run, lambda ns, n: fake_kube.terminate(ns, n, 0, restart=False)]),
    ):
        fake_kube.create("pods", NS, pod_body(name))
        for step in steps:
            step(NS, name)
        keep("pods", name)
    docs += fake_kube.objects("events", NS)
    for doc in docs:
        kubernetes_validate.validate(doc, "1.32.0", strict=True)
    assert len(docs) > 30
