"""The kubernetes runtime's manifests and its reading of pod statuses, without a server: labels, owners,
resources and the security context of what it creates, every manifest valid against the API's own schemas
(kubernetes-validate, strict: no unknown field) for several Kubernetes versions."""

from __future__ import annotations

import copy
import json
import socket

import orjson
import pytest

kubernetes_validate = pytest.importorskip("kubernetes_validate")

from nbfleet.controller.reconciler import _volume_gb  # noqa: E402
from nbfleet.domain.instances import FlavorLimits, ImageRef, InstanceSpec  # noqa: E402
from nbfleet.runtime.jupyter import server_args  # noqa: E402
from nbfleet.runtime.kubernetes import (  # noqa: E402
    KubeObjects,
    api_message,
    claim_name,
    owner_reference,
    pod_name,
    pod_state,
    service_name,
)
from nbfleet.services.catalog import FlavorCatalog  # noqa: E402

# The oldest and the newest minor versions the installed kubernetes-validate bundles schemas of that we support.
VERSIONS = ["1.30.0", "1.37.0"]
INSTANCE = "0f8b3f4e-6a9e-4a57-9b0e-2f1f2d2b7c11"
PROJECT = "5d1f3c0e9a8b4c7d8e9f0a1b2c3d4e5f"
OWNER = "a1b2c3d4e5f60718293a4b5c6d7e8f90"

CPU = FlavorLimits("modelarts.vm.cpu.2u", 2, 8192)
GPU = FlavorLimits(
    "modelarts.vm.gpu.t4",
    8,
    32768,
    1,
    node_selector={"nvidia.com/gpu.product": "Tesla-T4"},
    tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
)
FREE = FlavorLimits("modelarts.vm.cpu.free", 1, 4096)


def spec(flavor: FlavorLimits = CPU, volume_gb: int | None = None) -> InstanceSpec:
    return InstanceSpec(
        id=INSTANCE,
        name="nb",
        token="s3cret-token",
        flavor=flavor,
        image=ImageRef("notebook-python3.11", "registry.example/nbfleet/notebook-python3.11:1.0"),
        owner_id=OWNER,
        project_id=PROJECT,
        volume_gb=volume_gb,
    )


def claim_as_created(objects: KubeObjects, s: InstanceSpec) -> dict:
    claim = copy.deepcopy(objects.claim(s))
    claim["metadata"]["uid"] = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    return claim


def rendered(objects: KubeObjects, s: InstanceSpec) -> list[dict]:
    claim = claim_as_created(objects, s)
    return [objects.claim(s), objects.service(s, claim), objects.pod(s, claim)]


EXPECTED_LABELS = {
    "app.kubernetes.io/managed-by": "nbfleet",
    "nbfleet.io/instance": INSTANCE,
    "nbfleet.io/project": PROJECT,
    "nbfleet.io/owner": OWNER,
}


@pytest.mark.parametrize("flavor", [CPU, GPU, FREE], ids=["cpu", "gpu", "free"])
@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_for_the_api(flavor, version):
    objects = KubeObjects(namespace="notebooks", storage_class="fast-ssd", image_pull_secrets=("regcred",))
    for doc in rendered(objects, spec(flavor, 20)):
        # As the client sends it: JSON.
        kubernetes_validate.validate(json.loads(json.dumps(doc)), version, strict=True)


def test_a_broken_manifest_is_caught():
    """The validation the test above relies on does reject what the API would."""
    objects = KubeObjects()
    pod = objects.pod(spec(), claim_as_created(objects, spec()))
    pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] = ["2"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, VERSIONS[-1], strict=True)
    pod = objects.pod(spec(), claim_as_created(objects, spec()))
    pod["spec"]["containers"][0]["securityContext"]["dropAllCapabilities"] = True  # no such field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, VERSIONS[-1], strict=True)


def test_names_labels_and_owners():
    objects = KubeObjects(namespace="notebooks")
    s = spec()
    claim_doc, service, pod = rendered(objects, s)
    assert claim_doc["metadata"]["name"] == claim_name(INSTANCE) == f"nb-{INSTANCE}-work"
    assert service["metadata"]["name"] == service_name(INSTANCE) == f"nb-{INSTANCE}"
    assert pod["metadata"]["name"] == pod_name(INSTANCE) == f"nb-{INSTANCE}"
    assert len(pod["metadata"]["name"]) <= 63  # a DNS label: the Service's name, the pod's hostname rules
    for doc in (claim_doc, service, pod):
        assert doc["metadata"]["namespace"] == "notebooks"
        assert doc["metadata"]["labels"] == EXPECTED_LABELS
    # The claim is the top object; the Service and the Pod go with it.
    assert "ownerReferences" not in claim_doc["metadata"]
    owner = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "name": f"nb-{INSTANCE}-work",
        "uid": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    }
    assert service["metadata"]["ownerReferences"] == [owner]
    assert pod["metadata"]["ownerReferences"] == [owner]
    assert owner_reference(claim_as_created(objects, s)) == owner
    # The Service selects exactly this instance's pod.
    assert service["spec"]["selector"] == {"app.kubernetes.io/managed-by": "nbfleet", "nbfleet.io/instance": INSTANCE}
    assert all(pod["metadata"]["labels"][k] == v for k, v in service["spec"]["selector"].items())
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "jupyter", "port": 8888, "targetPort": 8888, "protocol": "TCP"}]


def test_claim_size_and_class():
    assert KubeObjects().claim(spec())["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "5Gi"}},
    }
    assert KubeObjects(storage_class="fast-ssd").claim(spec(volume_gb=100))["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "100Gi"}},
        "storageClassName": "fast-ssd",
    }


def test_the_volume_size_comes_from_the_instances_evs_volume():
    def row(volume):
        return {"spec": orjson.dumps({"volume": volume}).decode()}

    assert _volume_gb(row({"category": "EVS", "ownership": "MANAGED", "capacity": 20})) == 20
    assert _volume_gb(row({"category": "EFS", "ownership": "MANAGED", "capacity": 50})) is None
    assert _volume_gb(row({"category": "EVS"})) is None
    assert _volume_gb({"spec": "not json"}) is None
    assert _volume_gb({}) is None


def test_cpu_flavor_resources():
    pod = KubeObjects().pod(spec(CPU), claim_as_created(KubeObjects(), spec(CPU)))
    container = pod["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "8192Mi"},
        "limits": {"cpu": "2", "memory": "8192Mi"},
    }
    assert "nodeSelector" not in pod["spec"] and "tolerations" not in pod["spec"]


def test_gpu_flavor_resources_and_placement():
    pod = KubeObjects().pod(spec(GPU), claim_as_created(KubeObjects(), spec(GPU)))
    container = pod["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "8", "memory": "32768Mi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "8", "memory": "32768Mi", "nvidia.com/gpu": "1"},
    }
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "Tesla-T4"}
    assert pod["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_flavors_may_carry_node_selector_and_tolerations(tmp_path):
    path = tmp_path / "flavors.json"
    path.write_text(
        json.dumps(
            [
                {
                    "id": "gpu.a100",
                    "name": "A100",
                    "description": "",
                    "arch": "x86_64",
                    "category": "GPU",
                    "feature": "NOTEBOOK",
                    "free": False,
                    "vcpus": 16,
                    "memory_gb": 64,
                    "gpu": {"gpu": 2, "gpu_memory": "80GB", "type": "A100"},
                    "node_selector": {"pool": "a100"},
                    "tolerations": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
                },
                {
                    "id": "cpu.small",
                    "name": "small",
                    "description": "",
                    "arch": "x86_64",
                    "category": "CPU",
                    "feature": "NOTEBOOK",
                    "free": False,
                    "vcpus": 1,
                    "memory_gb": 0.5,
                },
            ]
        )
    )
    catalog = FlavorCatalog(path)
    gpu = catalog.get("gpu.a100")
    assert gpu is not None
    limits = gpu.limits()
    assert limits.gpus == 2 and limits.node_selector == {"pool": "a100"}
    assert limits.tolerations == ({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},)
    assert "node_selector" not in gpu.to_json(False) and "tolerations" not in gpu.to_json(False)
    small = catalog.get("cpu.small")
    assert small is not None and small.limits().node_selector == {} and small.limits().tolerations == ()
    hash(limits)  # still usable as a key, as before
    pod = KubeObjects().pod(spec(limits), claim_as_created(KubeObjects(), spec(limits)))
    assert pod["spec"]["nodeSelector"] == {"pool": "a100"}
    for version in VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)


def test_the_pod_is_hardened():
    objects = KubeObjects(image_pull_secrets=("regcred", "mirror"))
    pod = objects.pod(spec(), claim_as_created(objects, spec()))
    pod_spec = pod["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["enableServiceLinks"] is False
    assert pod_spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    assert pod_spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 100,
        "fsGroup": 100,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod_spec["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000 and security["runAsGroup"] == 100
    assert security["privileged"] is False
    # Writable: the work volume (the claim), /tmp and Jupyter's directories in $HOME; nothing else.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {
        "/home/ma-user/work",
        "/tmp",
        "/home/ma-user/.local",
        "/home/ma-user/.cache",
        "/home/ma-user/.config",
        "/home/ma-user/.jupyter",
        "/home/ma-user/.ipython",
    }
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert volumes["work"] == {"name": "work", "persistentVolumeClaim": {"claimName": f"nb-{INSTANCE}-work"}}
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"] == {}
    for directory in (".local", ".cache", ".config", ".jupyter", ".ipython"):
        assert volumes[mounts[f"/home/ma-user/{directory}"]["name"]]["emptyDir"] == {}
    assert not any("subPath" in m for m in container["volumeMounts"])
    assert len({m["name"] for m in container["volumeMounts"]}) == len(container["volumeMounts"])
    assert not any("hostPath" in v for v in pod_spec["volumes"])


def test_the_container_runs_jupyter_on_its_port_with_the_token():
    objects = KubeObjects(path_prefix="/notebooks/")
    (container,) = objects.pod(spec(), claim_as_created(objects, spec()))["spec"]["containers"]
    assert container["image"] == "registry.example/nbfleet/notebook-python3.11:1.0"
    assert container["command"] == ["python", "-m", "jupyter_server"]
    args = container["args"]
    assert "--ServerApp.ip=0.0.0.0" in args and "--ServerApp.port=8888" in args
    assert f"--ServerApp.base_url=/notebooks/{INSTANCE}/" in args
    assert "--ServerApp.root_dir=/home/ma-user/work" in args
    assert not any(a.startswith("--ServerApp.sock") for a in args)
    assert not any("s3cret-token" in a for a in args)  # never on the command line
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["JUPYTER_TOKEN"] == "s3cret-token"
    assert env["HOME"] == "/home/ma-user"
    assert container["ports"] == [{"name": "jupyter", "containerPort": 8888, "protocol": "TCP"}]
    # Host routing: Jupyter at /.
    (container,) = KubeObjects().pod(spec(), claim_as_created(KubeObjects(), spec()))["spec"]["containers"]
    assert "--ServerApp.base_url=/" in container["args"]


def test_server_args_listen_on_a_socket_or_a_port():
    on_socket = server_args(socket="/run/nbfleet/jupyter.sock", root_dir="/w", base_url="/")
    assert "--ServerApp.sock=/run/nbfleet/jupyter.sock" in on_socket and "--ServerApp.ip=0.0.0.0" not in on_socket
    on_port = server_args(port=8888, root_dir="/w", base_url="/")
    assert on_port[:3] == ["--ServerApp.ip=0.0.0.0", "--ServerApp.port=8888", "--ServerApp.port_retries=0"]
    with pytest.raises(ValueError):
        server_args(root_dir="/w", base_url="/")


# -- reading pod statuses -------------------------------------------------------------------------


def pod(phase="Pending", conditions=(), state=None, node=None, deleting=False, reason=None, message=None):
    status: dict = {"phase": phase, "conditions": list(conditions)}
    if state is not None:
        status["containerStatuses"] = [{"name": "notebook", "image": "img:1", "state": state}]
    if reason:
        status["reason"], status["message"] = reason, message
    doc: dict = {"metadata": {"name": "nb-x"}, "spec": {}, "status": status}
    if node:
        doc["spec"]["nodeName"] = node
    if deleting:
        doc["metadata"]["deletionTimestamp"] = "2026-11-30T09:00:00Z"
    return doc


def test_pod_states():
    assert pod_state(None) == pod_state(None) and not pod_state(None).exists
    pending = pod_state(pod())
    assert pending.exists and not pending.scheduled and pending.failure is None and not pending.alive
    scheduled = pod_state(
        pod(conditions=[{"type": "PodScheduled", "status": "True"}], node="node-1", state={"waiting": {}})
    )
    assert scheduled.scheduled and scheduled.node == "node-1" and not scheduled.started
    creating = pod_state(pod(node="n", state={"waiting": {"reason": "ContainerCreating"}}))
    assert creating.failure is None and not creating.started
    running = pod_state(pod("Running", node="n", state={"running": {"startedAt": "2026-11-30T09:00:00Z"}}))
    assert running.started and running.alive


def test_pod_failures_carry_their_reason():
    unschedulable = pod_state(
        pod(
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ]
        )
    )
    assert unschedulable.failure == "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    for reason in ("ErrImagePull", "ImagePullBackOff"):
        state = pod_state(pod(node="n", state={"waiting": {"reason": reason, "message": "pull access denied"}}))
        assert state.failure == f"{reason}: pull access denied" and not state.alive
    oom = pod_state(
        pod("Failed", node="n", state={"terminated": {"reason": "OOMKilled", "exitCode": 137}}),
        FlavorLimits("f", 1, 512),
    )
    assert oom.failure is not None and oom.failure.startswith("OOMKilled") and "512 MiB" in oom.failure
    assert not oom.alive and oom.started
    exited = pod_state(pod("Failed", node="n", state={"terminated": {"reason": "Error", "exitCode": 1}}))
    assert exited.failure == "Error: Jupyter exited with code 1"
    evicted = pod_state(pod("Failed", node="n", reason="Evicted", message="The node was low on memory."))
    assert evicted.failure == "Evicted: The node was low on memory."
    # As the kubelet leaves an evicted pod: its container killed (137) too; the eviction is the reason.
    killed = {"terminated": {"reason": "Error", "exitCode": 137}}
    evicted = pod_state(pod("Failed", node="n", state=killed, reason="Evicted", message="The node was low on memory."))
    assert evicted.failure == "Evicted: The node was low on memory." and not evicted.alive
    deleting = pod_state(pod("Running", node="n", state={"running": {}}, deleting=True))
    assert not deleting.alive and "being deleted" in (deleting.failure or "")
    config = pod_state(pod(node="n", state={"waiting": {"reason": "CreateContainerConfigError", "message": "x"}}))
    assert config.failure == "CreateContainerConfigError: x"


def test_api_messages_are_one_line():
    from kubernetes.client.exceptions import ApiException

    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps({"kind": "Status", "message": 'pods is forbidden: User "x" cannot list'})
    assert api_message(exc) == 'the Kubernetes API answered 403 Forbidden: pods is forbidden: User "x" cannot list'
    assert api_message(ApiException(status=0, reason="SSLError")) == "the Kubernetes API is unreachable (SSLError)"
    assert api_message(ConnectionRefusedError()) == "the Kubernetes API is unreachable (ConnectionRefusedError)"


# -- configuration ---------------------------------------------------------------------------------


def test_where_the_client_connects(tmp_path, monkeypatch):
    from nbfleet.runtime.kubernetes import KubeUnavailable, api_client, check_reachable

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(KubeUnavailable, match="no Kubernetes configuration"):
        api_client()
    # ~/.kube/config, when there is one; a URL alone stands alone, without its credentials.
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://cluster.example:6443"}}],
                "users": [{"name": "u", "user": {"token": "cluster-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "nb"}}],
                "current-context": "x",
            }
        )
    )
    from_home = api_client()
    assert from_home.configuration.host == "https://cluster.example:6443"
    assert "cluster-token" in str(from_home.configuration.api_key)
    alone = api_client(api_url="http://127.0.0.1:8001/")
    assert alone.configuration.host == "http://127.0.0.1:8001"
    assert "cluster-token" not in str(alone.configuration.api_key)
    both = api_client(tmp_path / ".kube" / "config", "https://other.example:6443")
    assert both.configuration.host == "https://other.example:6443" and "cluster-token" in str(
        both.configuration.api_key
    )
    with pytest.raises(KubeUnavailable, match="cannot be loaded"):
        api_client(tmp_path / "missing.yaml")
    # An API that does not answer: one line saying so.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    unreachable = api_client(api_url=f"http://127.0.0.1:{port}")
    with pytest.raises(KubeUnavailable) as refused:
        check_reachable(unreachable, "nbfleet")
    assert str(refused.value) == f"http://127.0.0.1:{port}: the Kubernetes API is unreachable (MaxRetryError)"
    assert "\n" not in str(refused.value)


def test_serve_refuses_to_start_without_the_api(tmp_path):
    """In a process of its own: serve configures logging and the umask of the process it runs in."""
    import os
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-c", "from nbfleet.cli.main import app; app()", "serve", "--runtime", "kubernetes"],
        env={**os.environ, "NBFLEET_KUBE_API_URL": f"http://127.0.0.1:{port}", "NBFLEET_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: the kubernetes runtime cannot reach the Kubernetes API (namespace nbfleet): "
        f"http://127.0.0.1:{port}: the Kubernetes API is unreachable (MaxRetryError)"
    )
