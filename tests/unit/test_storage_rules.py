"""The dynamic-storage rules of the domain: mount paths, uris, collisions, and the operator's allow-lists."""

from __future__ import annotations

import posixpath
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbfleet.domain import errors as E
from nbfleet.domain.storage import (
    Category,
    StoragePolicy,
    collides,
    efs_location,
    normal_mount_path,
    obs_location,
    parse_attach,
)

EFS_ID = "0a1b2c3d-0000-4000-8000-00000000abcd"


@pytest.mark.parametrize(
    "given_path, normal",
    [
        ("/data/wang/", "/data/wang/"),
        ("/data/wang", "/data/wang/"),
        ("/data/a/b.c_d-e/", "/data/a/b.c_d-e/"),
    ],
)
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
    assert posixpath.normpath(path) == path.rstrip("/")  # nothing left to normalise, nothing to resolve


@pytest.mark.parametrize(
    "uri, bucket, prefix",
    [
        ("obs://bkt/dir/", "bkt", "dir"),
        ("obs://my.bucket-1/a/b", "my.bucket-1", "a/b"),
    ],
)
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
        Category.EFS,
        "/data/x/",
        EFS_ID,
        ("x",),
    )
    with pytest.raises(E.MissingProperty):
        parse_attach({"mount_path": "/nope", "uri": "obs://b/"})  # missing members come before bad values


def test_collisions():
    assert collides("/data/a/", "/data/a/") and collides("/data/a/", "/data/a/b/")
    assert collides("/data/a/b/", "/data/a/")
    assert not collides("/data/a/", "/data/ab/")


def test_the_allow_lists():
    policy = StoragePolicy(
        {
            EFS_ID: {"path": "/srv/team", "projects": ["p1"]},
            "nfs.example:/exports": {"path": "/mnt/nfs", "projects": ["*"]},
        },
        {"shared": ["*"], "mine": ["p1"]},
        obs_configured=True,
    )
    assert policy.efs_source("p1", EFS_ID, "anything:/x/y").below == ("x", "y")
    assert policy.efs_source("p2", EFS_ID, "anything:/x") is None
    found = policy.efs_source("p2", "11111111-0000-4000-8000-000000000000", "nfs.example:/exports/sub")
    assert (found.root, found.below) == (Path("/mnt/nfs"), ("sub",))
    assert policy.efs_source("p2", "11111111-0000-4000-8000-000000000000", "other.example:/exports/sub") is None
    assert policy.efs_source("p2", "11111111-0000-4000-8000-000000000000", "nfs.example:/exportsX") is None
    assert policy.obs_allowed("p2", "shared") and policy.obs_allowed("p1", "mine")
    assert not policy.obs_allowed("p2", "mine") and not policy.obs_allowed("p1", "unlisted")
    assert not StoragePolicy({}, {"shared": ["*"]}, obs_configured=False).obs_allowed("p1", "shared")


@pytest.mark.parametrize("text", ["/data/a\n", "/data/a/b\n", "/data/a\n/"])
def test_a_trailing_newline_is_no_mount_path(text):
    with pytest.raises(E.InvalidProperty):
        normal_mount_path(text)


def test_uuids_and_uris_with_a_trailing_newline_are_refused():
    with pytest.raises(E.InvalidProperty):
        parse_attach({"category": "EFS", "mount_path": "/data/x", "uri": "h:/d", "efs_id": EFS_ID + "\n"})
    with pytest.raises(E.InvalidProperty):
        efs_location("h:/d\n")
    with pytest.raises(E.InvalidProperty):
        obs_location("obs://bkt/dir\n")


SECRET_ID = "22222222-0000-4000-8000-000000000000"


def test_the_most_specific_entry_decides_whichever_key_is_named():
    """A directory the operator configured for one project only stays that project's, also when another
    project names a file system (by id or export) that contains it."""
    policy = StoragePolicy(
        {
            EFS_ID: {"path": "/mnt/p", "projects": ["p1"]},
            "host:/p": {"path": "/mnt/p", "projects": ["p1"]},
            "host:/p/secret": {"path": "/mnt/p/secret", "projects": ["p2"]},
            SECRET_ID: {"path": "/mnt/p/other/", "projects": ["p2"]},
        },
        {},
        obs_configured=False,
    )
    assert policy.efs_source("p1", EFS_ID, "x:/secret") is None  # by id, into p2's directory
    assert policy.efs_source("p1", EFS_ID, "x:/secret/deeper") is None
    assert policy.efs_source("p1", EFS_ID, "x:/other") is None  # p2's, configured by id
    assert policy.efs_source("p1", SECRET_ID, "host:/p/secret") is None
    assert policy.efs_source("p1", SECRET_ID, "host:/p/other") is None  # by export, into p2's directory
    assert policy.efs_source("p1", EFS_ID, "x:/secretX").below == ("secretX",)
    assert policy.efs_source("p1", EFS_ID, "x:/public").below == ("public",)
    found = policy.efs_source("p2", SECRET_ID, "h:/x")
    assert (found.root, found.below) == (Path("/mnt/p/other/"), ("x",))
    found = policy.efs_source("p2", "33333333-0000-4000-8000-000000000000", "host:/p/secret/x")
    assert (found.root, found.below) == (Path("/mnt/p/secret"), ("x",))


def test_read_only_entries():
    policy = StoragePolicy(
        {
            EFS_ID: {"path": "/mnt/ds", "projects": ["*"], "read_only": True},
            "host:/ds": {"path": "/mnt/ds", "projects": ["p1"]},
        },
        {},
        obs_configured=False,
    )
    assert policy.efs_source("p2", EFS_ID, "x:/a").read_only
    assert policy.efs_source("p1", EFS_ID, "x:/a").read_only  # the entry named decides among equals
    assert not policy.efs_source("p1", SECRET_ID, "host:/ds/a").read_only
    assert policy.efs_source("p2", SECRET_ID, "host:/ds/a") is None  # p1's entry, named
