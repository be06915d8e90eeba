"""Fixtures for tests against the fake Kubernetes API server (tests/kube/fake_apiserver.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .fake_apiserver import FakeKubeApiServer
from .jupyter_pods import JupyterBehindPods


@pytest.fixture
def fake_kube() -> Iterator[FakeKubeApiServer]:
    """A fake kube-apiserver on a free 127.0.0.1 port; bookmarks every 0.2 s so that tests see them quickly."""
    with FakeKubeApiServer(bookmark_interval=0.2) as fake:
        yield fake
    assert not fake.errors, f"policies or hooks failed: {fake.errors!r}"


@pytest.fixture
def core_v1(fake_kube: FakeKubeApiServer):
    """kubernetes.client.CoreV1Api pointed at fake_kube."""
    api = fake_kube.core_v1()
    yield api
    api.api_client.close()


@pytest.fixture
def jupyters(fake_kube: FakeKubeApiServer, tmp_path: Path) -> Iterator[JupyterBehindPods]:
    """A real jupyter-server behind every pod that fake_kube runs, ended with the pod (or after the test)."""
    root = tmp_path / "pods"
    root.mkdir()
    hooks = JupyterBehindPods(root)
    fake_kube.on_run = hooks.on_run
    fake_kube.on_stop = hooks.on_stop
    yield hooks
    hooks.close()
