"""Images as environments: built on first use as a visible step (once, however many starts wait for it),
ahead of time with ``nbfleet images build``, read-only once built, and a failed build is a clear failure."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbfleet.domain.model import StepStatus
from nbfleet.runtime.base import RuntimeFailure
from nbfleet.runtime.environments import MARKER, ImageEnvironments
from nbfleet.runtime.local import LocalRuntime

from ..images import make_reachable
from .local_helpers import BARE_SERVER, Jupyter, RecordingReporter, make_spec, marked

pytestmark = [pytest.mark.slow, pytest.mark.runtime_only]
SMALL = {"python": f"{sys.version_info.major}.{sys.version_info.minor}", "packages": ["jupyter-server", "ipykernel"]}


@pytest.mark.asyncio
async def test_first_use_builds_the_environment_once_as_a_visible_step(tmp_path):
    root = make_reachable(tmp_path)
    runtime = LocalRuntime(
        root / "data", extra_args=BARE_SERVER, environments=ImageEnvironments(root / "images", shared=os.geteuid() == 0)
    )
    specs = [make_spec(f"first-{n}", image="small", environment=SMALL) for n in range(2)]
    reporters = [RecordingReporter(), RecordingReporter()]
    try:
        placements = await asyncio.gather(*(runtime.start(s, r) for s, r in zip(specs, reporters, strict=True)))
        built = [r for r in reporters if ("image", "Building the small environment") in r.events]
        assert len(built) == 1  # the other start waited for the same build
        assert any(
            n == 2 and s == StepStatus.PROCESSING and "Building the small environment" in (d or "")
            for n, s, d in built[0].steps
        )
        printed = await Jupyter(specs[1], placements[1]).run("import sys; print(sys.prefix)")
        environment = Path(printed.strip())
        assert environment.parent == root / "images" and (environment / MARKER).is_file()
        # Read-only on disk too, for everyone; pip's --user layer is what instances write.
        assert not any(os.stat(p).st_mode & 0o222 for p in [environment, *environment.rglob("*")] if not p.is_symlink())
        assert "include-system-site-packages = true" in (environment / "pyvenv.cfg").read_text()
    finally:
        for spec in specs:
            await runtime.delete(spec, None)
        await runtime.close()
    assert not marked(root / "data")


def test_nbfleet_images_build_builds_ahead_and_then_finds_it_built(tmp_path):
    catalogue = tmp_path / "images.json"
    catalogue.write_text(
        json.dumps(
            [
                {"name": "small", "namespace": "t", "tag": "1", "environment": SMALL},
                {"name": "label-only", "namespace": "t", "tag": "1"},
            ]
        )
    )
    env = dict(os.environ, NBFLEET_IMAGES_FILE=str(catalogue), NBFLEET_IMAGE_DIR=str(make_reachable(tmp_path) / "img"))

    def build(*args):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "nbfleet.cli.main",
                "images",
                "build",
                *args,
                "--data-dir",
                str(tmp_path / "data"),
                "--json",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )

    first = build()
    assert first.returncode == 0, first.stderr
    [result] = json.loads(first.stdout)  # images without an environment are not built
    assert result["name"] == "small" and result["built_seconds"] > 0
    assert Path(result["path"]).parent == tmp_path / "img"
    again = build("small")
    assert json.loads(again.stdout)[0]["built_seconds"] is None
    unknown = build("no-such-image")
    assert unknown.returncode == 1 and "no image named 'no-such-image'" in unknown.stderr


@pytest.mark.asyncio
async def test_a_build_that_fails_fails_step_2_with_the_reason_and_leaves_nothing(tmp_path):
    root = make_reachable(tmp_path)
    images = ImageEnvironments(root / "images", shared=os.geteuid() == 0)
    runtime = LocalRuntime(root / "data", environments=images)
    broken = {"python": SMALL["python"], "packages": ["jupyter-server", "nbfleet-no-such-package-4c1e"]}
    reporter = RecordingReporter()
    try:
        with pytest.raises(RuntimeFailure) as failure:
            await runtime.start(make_spec("broken", image="broken", environment=broken), reporter)
    finally:
        await runtime.close()
    assert failure.value.step == 2
    assert "building the image environment failed" in failure.value.reason
    assert "nbfleet-no-such-package-4c1e" in failure.value.reason
    assert reporter.steps[-1][:2] == (2, StepStatus.FAILED)
    assert [p.name for p in (root / "images").iterdir()] == [".locks"]
