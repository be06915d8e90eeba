"""nbfleet as a whole with ``NBFLEET_RUNTIME=kubernetes`` against the fake API server: the API creates an
instance, the reconciler starts it as a pod (a real jupyter-server behind its Service), and nbfleet's proxy
reaches that Jupyter; stop and delete remove what they should."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from nbfleet.app import create_app

from ..conftest import make_settings
from ..support import Api, Creds
from .fake_apiserver import run_after, wait_until
from .test_kubernetes_runtime import NS, objects

pytestmark = pytest.mark.slow


def test_an_instance_through_the_whole_app(fake_kube, jupyters, tmp_path):
    fake_kube.auto = run_after(0.05)
    settings = make_settings(
        tmp_path,
        runtime="kubernetes",
        kube_api_url=fake_kube.url,
        kube_namespace=NS,
        notebook_routing="path",
    )
    app = create_app(settings, announce=lambda _text: None)
    with TestClient(app) as client:
        creds = json.loads((settings.data_dir / "credentials.json").read_text())
        api = Api(client, Creds(creds["ak"], creds["sk"], creds["project_id"], creds["user_id"]), app.state.services)
        created = api.create("kube", wait=False, volume={"category": "EVS", "ownership": "MANAGED", "capacity": 15})
        nb = api.wait_status(created["id"], "RUNNING", "CREATE_FAILED", timeout=90)
        assert nb["status"] == "RUNNING", nb
        claim = fake_kube.get("persistentvolumeclaims", NS, f"nb-{nb['id']}-work")
        assert claim["spec"]["resources"]["requests"]["storage"] == "15Gi"
        assert claim["metadata"]["labels"]["nbfleet.io/project"] == creds["project_id"]
        assert claim["metadata"]["labels"]["nbfleet.io/owner"] == creds["user_id"]

        # Through nbfleet's proxy to the real Jupyter behind the pod's Service.
        status = client.get(f"/notebooks/{nb['id']}/api/status", headers={"Authorization": f"token {nb['token']}"})
        assert status.status_code == 200, status.text
        assert "started" in status.json()
        client.cookies.clear()  # Jupyter's login cookie from the request above
        assert client.get(f"/notebooks/{nb['id']}/api/status").status_code == 403

        api.ok("POST", f"/notebooks/{nb['id']}/stop")
        api.wait_status(nb["id"], "STOPPED", timeout=60)
        assert objects(fake_kube, "pods", nb["id"]) == []
        assert len(objects(fake_kube, "persistentvolumeclaims", nb["id"])) == 1

        api.ok("POST", f"/notebooks/{nb['id']}/start")
        nb = api.wait_status(nb["id"], "RUNNING", "START_FAILED", "ERROR", timeout=90)
        assert nb["status"] == "RUNNING", nb
        again = client.get(f"/notebooks/{nb['id']}/api/status", headers={"Authorization": f"token {nb['token']}"})
        assert again.status_code == 200

        # The pod dies (the node kills it): the observer reports the instance as lost, with the reason.
        fake_kube.oom_kill(NS, f"nb-{nb['id']}")
        lost = api.wait_status(nb["id"], "ERROR", timeout=30)
        assert lost["fail_reason"].startswith("OOMKilled"), lost

        api.call("DELETE", f"/notebooks/{nb['id']}")
        for kind in ("pods", "services", "persistentvolumeclaims"):
            wait_until(lambda kind=kind: objects(fake_kube, kind, nb["id"]) == [], timeout=30)
