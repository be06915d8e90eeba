"""Fixtures for tests against the fake Kubernetes API server (tests/kube/fake_apiserver.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fake_apiserver import FakeKubeApiServer


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
