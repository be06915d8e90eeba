"""HostMounts as the reconciler calls it, without a server: where its work runs, what its readiness check
asks the object store, the modes of an instance's directories, and what a failure tells the user."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from nbfleet.domain.storage import StoragePolicy
from nbfleet.runtime.base import MountSpec, RuntimeFailure
from nbfleet.runtime.mounts import HostMounts

from ..procs import unmount_below
from ..s3_server import ACCESS_KEY, SECRET_KEY, S3Server

pytestmark = [pytest.mark.runtime_only]

BUCKET = "many-objects"


def _root_only():
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")


def _s3fs():
    _root_only()
    if not os.path.exists("/dev/fuse") or shutil.which("s3fs") is None:
        pytest.skip("s3fs and /dev/fuse are needed (apt-get install s3fs)")


INST = SimpleNamespace(id="inst", project_id="p")


def test_mount_work_runs_on_threads_of_its_own(tmp_path):
    """Not on the event loop's default executor, which the store calls share: stuck mounts cannot starve them."""
    mounts = HostMounts(tmp_path / "data", StoragePolicy({}, {}, False), owner=lambda _id: (1000, 1000))
    seen = []
    mounts._attach = lambda spec, mount: seen.append(threading.current_thread().name)
    mounts._detach = lambda iid, mount: seen.append(threading.current_thread().name)

    async def go():
        await mounts.attach(INST, MountSpec("m", "EFS", ("a",), "h:/a", None, "p"))
        await mounts.detach(INST, MountSpec("m", "EFS", ("a",), "h:/a", None, "p"))

    asyncio.run(go())
    assert len(seen) == 2 and all(name.startswith("nbfleet-mounts") for name in seen), seen
    mounts.close()


def test_a_change_that_waits_for_the_instance_lock_gives_up(tmp_path):
    """A mount still running for the instance (its wait given up) holds the lock: the undo that follows
    fails after the mount timeout instead of holding a second worker as long as the first."""
    mounts = HostMounts(
        tmp_path / "data", StoragePolicy({}, {}, False), owner=lambda _id: (1000, 1000), mount_timeout=0.3
    )
    release = threading.Event()
    mounts._attach = lambda spec, mount: release.wait(10)
    mounts._detach = lambda iid, mount: None
    spec = MountSpec("m", "EFS", ("a",), "h:/a", None, "p")

    async def go():
        stuck = asyncio.ensure_future(mounts.attach(INST, spec))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(RuntimeFailure, match="still under way"):
            await mounts.detach(INST, spec)
        assert time.monotonic() - started < 2
        release.set()
        await stuck

    asyncio.run(go())
    mounts.close()


@pytest.mark.parametrize("private, mode", [(True, 0o700), (False, 0o711)])
def test_the_modes_of_an_instance_directory(tmp_path, private, mode):
    """docker runtime (private): storage/<id> is root's alone, so no host account of the containers' group
    (gid 100, often `users`) reaches any container's /data; dockerd binds it as root."""
    _root_only()
    mounts = HostMounts(
        tmp_path / "data", StoragePolicy({}, {}, False), owner=lambda _id: (1000, 100), private_instance_dirs=private
    )
    try:
        data = mounts.prepare("inst")
        top = os.stat(mounts.instance_dir("inst"))
        assert (stat.S_IMODE(top.st_mode), top.st_uid) == (mode, 0)
        info = os.stat(data)
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o750, 0, 100)
    finally:
        asyncio.run(mounts.detach_all(INST))
        assert unmount_below(tmp_path) == []


def test_what_s3fs_says_goes_to_the_operator_not_to_the_user(tmp_path, caplog):
    _root_only()
    fake = tmp_path / "s3fs"
    fake.write_text("#!/bin/sh\necho 's3fs: /srv/secret/host/path: cannot reach http://10.9.8.7:9000' >&2\nexit 1\n")
    fake.chmod(0o755)
    fuse = tmp_path / "fuse"
    fuse.touch()
    mounts = HostMounts(
        tmp_path / "data",
        StoragePolicy({}, {BUCKET: ["*"]}, True),
        owner=lambda _id: (1000, 1000),
        obs_endpoint="http://10.9.8.7:9000",
        obs_credentials=("AK", "SK"),
        s3fs=str(fake),
        fuse_device=str(fuse),
    )
    mounts.prepare("inst")
    try:
        with caplog.at_level(logging.ERROR, logger="nbfleet.runtime.mounts"), pytest.raises(RuntimeFailure) as failed:
            asyncio.run(mounts.attach(INST, MountSpec("m", "OBS", ("b",), f"obs://{BUCKET}/dir/", None, "p")))
        reason = failed.value.reason
        assert "/srv/secret" not in reason and "10.9.8.7" not in reason and "operator's log" in reason, reason
        assert "/srv/secret/host/path" in caplog.text and "10.9.8.7" in caplog.text
    finally:
        asyncio.run(mounts.detach_all(INST))
        assert unmount_below(tmp_path) == []


def test_a_directory_of_many_objects_mounts_without_asking_about_each(tmp_path):
    """The readiness check stats the mount's root; a listing would make s3fs ask the store about every object
    of the directory (minutes for a large one, a worker held all along)."""
    _s3fs()
    os.chmod(tmp_path, 0o755)
    s3 = S3Server(tmp_path).start()
    mounts = HostMounts(
        tmp_path / "data",
        StoragePolicy({}, {BUCKET: ["*"]}, True),
        owner=lambda _id: (1000, 1000),
        obs_endpoint=s3.endpoint,
        obs_credentials=(ACCESS_KEY, SECRET_KEY),
        mount_timeout=20,
    )
    try:
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: client.put_object(Bucket=BUCKET, Key=f"dir/o{i:05d}", Body=b"x"), range(2000)))
        mounts.prepare("inst")
        heads_before = s3.log_path.read_text(errors="replace").count('"HEAD ')
        started = time.monotonic()
        asyncio.run(mounts.attach(INST, MountSpec("m", "OBS", ("b",), f"obs://{BUCKET}/dir/", None, "p")))
        assert time.monotonic() - started < 20
        assert (
            os.path.ismount(mounts.data("inst") / "b")
            or str(mounts.data("inst") / "b") in Path("/proc/self/mountinfo").read_text()
        )
        heads = s3.log_path.read_text(errors="replace").count('"HEAD ') - heads_before
        assert heads < 50, f"{heads} HEAD requests: the readiness check listed the directory"
        tmp = mounts._staging("inst") / "m.tmp"
        info = os.stat(tmp)
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, 0)  # s3fs's temporary files: root's only
    finally:
        asyncio.run(mounts.detach_all(INST))
        mounts.close()
        s3.stop()
        assert unmount_below(tmp_path) == []
