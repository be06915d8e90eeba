"""The dynamic-storage rules of the domain: mount paths, uris, collisions, and the operator's allow-lists."""
from __future__ import annotations

import posixpath
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from nbfleet.domain import errors as E
from nbfleet.domain.storage import (Category, StoragePolicy, collides, efs_location, normal_mount_path, obs_location,
                                    parse_attach)

EFS_ID = "0a1b2c3d-0000-4000-8000-00000000abcd"


@pytest.mark.parametrize("given_path, normal", [
    ("/data/wang/", "/data/wang/"), ("/data/wang", "/data/wang/"), ("/data/a/b.c_d-e/", "/data/a/b.c_d-e/"),
])
def test_mount_paths_are_normalised(given_path, normal):
    assert normal_mount_path(given_path) == normal


@given(st.text(max_size=40))
def test_every_accepted_mount_path_stays_below_data(text):
    try:
        path = normal_mount_path("/data/" + text)
    except E.InvalidProperty:
        return
    parts = path.strip("/").split("/")
    assert parts[0] == "data" and len(parts) >= 2
    assert all(p not in ("", ".", "..") for p in parts)
    assert posixpath.normpath(path) == path.rstrip("/")   # nothing left to normalise, nothing to resolve


@pytest.mark.parametrize("uri, bucket, prefix", [
    ("obs://bkt/dir/", "bkt", "dir"), ("obs://my.bucket-1/a/b", "my.bucket-1", "a/b"),
])
def test_obs_uris(uri, bucket, prefix):
    assert obs_location(uri) == (bucket, prefix)


@pytest.mark.parametrize("uri", ["obs://bkt", "obs://bkt/", "obs://bkt///"])
def test_a_bucket_root_is_6358(uri):
    with pytest.raises(E.ObsBucketRoot):
        obs_location(uri)


def test_efs_uris():
    assert efs_location("x.sfsturbo.internal:/a/b/") == ("x.sfsturbo.internal", "/a/b", ("a", "b"))
    with pytest.raises(E.InvalidProperty):
        efs_location("x:/a/../b")


def test_parse_attach_order_and_category_case():
    request = parse_attach({"category": "efs", "mount_path": "/data/x", "uri": "h:/d", "efs_id": EFS_ID.upper()})
    assert (request.category, request.mount_path, request.efs_id, request.parts) == (
        Category.EFS, "/data/x/", EFS_ID, ("x",))
    with pytest.raises(E.MissingProperty):
        parse_attach({"mount_path": "/nope", "uri": "obs://b/"})   # missing members come before bad values


def test_collisions():
    assert collides("/data/a/", "/data/a/") and collides("/data/a/", "/data/a/b/") and collides("/data/a/b/", "/data/a/")
    assert not collides("/data/a/", "/data/ab/")


def test_the_allow_lists():
    policy = StoragePolicy({EFS_ID: {"path": "/srv/team", "projects": ["p1"]},
                            "nfs.example:/exports": {"path": "/mnt/nfs", "projects": ["*"]}},
                           {"shared": ["*"], "mine": ["p1"]}, obs_configured=True)
    assert policy.efs_source("p1", EFS_ID, "anything:/x/y").below == ("x", "y")
    assert policy.efs_source("p2", EFS_ID, "anything:/x") is None
    found = policy.efs_source("p2", "11111111-0000-4000-8000-000000000000", "nfs.example:/exports/sub")
    assert (found.root, found.below) == (Path("/mnt/nfs"), ("sub",))
    assert policy.efs_source("p2", "11111111-0000-4000-8000-000000000000", "other.example:/exports/sub") is None
    assert policy.efs_source("p2", "11111111-0000-4000-8000-000000000000", "nfs.example:/exportsX") is None
    assert policy.obs_allowed("p2", "shared") and policy.obs_allowed("p1", "mine")
    assert not policy.obs_allowed("p2", "mine") and not policy.obs_allowed("p1", "unlisted")
    assert not StoragePolicy({}, {"shared": ["*"]}, obs_configured=False).obs_allowed("p1", "shared")
