"""The SSH gateway's own limits, without a server: its thread pool, its channel caps, terminal sizes."""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import termios
import threading
from pathlib import Path

import asyncssh
import pytest

from nbfleet.runtime.sessions import SessionRefused
from nbfleet.ssh.gateway import SshGateway, _ChannelCount
from nbfleet.ssh.sessions import _set_size


def gateway(**limits) -> SshGateway:
    return SshGateway(
        host="127.0.0.1",
        port=0,
        host_key=Path("/nonexistent"),
        access=lambda nid: None,
        enter=lambda nid, placement: None,
        **limits,
    )


def test_blocking_work_runs_in_the_gateways_own_threads():
    """Not in the loop's default executor, which the reconciler's store calls use."""
    seen = []

    def access(notebook_id):
        seen.append(threading.current_thread().name)
        return None

    gw = gateway()
    gw.access = access

    async def scenario():
        with pytest.raises(SessionRefused):
            await gw.open_entry("nb", "key")

    asyncio.run(scenario())
    assert seen and seen[0].startswith("nbfleet-ssh")
    assert gw._threads._max_workers == 8


def test_channels_are_capped_per_connection_per_instance_and_overall():
    gw = gateway(max_channels_per_connection=2, max_sessions_per_instance=3, max_sessions=4)
    one, two, three = _ChannelCount(), _ChannelCount(), _ChannelCount()
    held = [gw.take_slot(one, "a"), gw.take_slot(one, "a")]
    with pytest.raises(asyncssh.ChannelOpenError, match="2 channels per connection") as refused:
        gw.take_slot(one, "a")
    assert refused.value.code == asyncssh.OPEN_RESOURCE_SHORTAGE
    held.append(gw.take_slot(two, "a"))
    with pytest.raises(asyncssh.ChannelOpenError, match="3 sessions per instance"):
        gw.take_slot(two, "a")
    held.append(gw.take_slot(three, "b"))
    with pytest.raises(asyncssh.ChannelOpenError, match="busy"):
        gw.take_slot(three, "b")
    held[0].release()
    held[0].release()  # released once only
    assert one.count == 1 and gw._open == 3 and gw._per_instance == {"a": 2, "b": 1}
    gw.take_slot(one, "a")


def test_a_terminal_size_beyond_16_bits_is_clamped():
    master, slave = os.openpty()
    try:
        _set_size(master, (70000, 2**32 - 1, 70000, -5))
        rows, cols, xpix, ypix = struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8))
        assert (rows, cols, xpix, ypix) == (0xFFFF, 0xFFFF, 0xFFFF, 0)
    finally:
        os.close(master)
        os.close(slave)


def test_serve_raises_its_open_files_limit_to_the_hard_limit():
    import resource
    import subprocess
    import sys

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip("needs a finite hard limit above 256")

    def lowered():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource; from nbfleet.app import raise_open_files_limit; "
            "raise_open_files_limit(); print(*resource.getrlimit(resource.RLIMIT_NOFILE))",
        ],
        preexec_fn=lowered,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.split() == [str(hard), str(hard)]
