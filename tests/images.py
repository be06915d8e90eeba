"""The image environments the tests run notebooks in: built once per machine, shared by every test.

They live outside any test's data dir (building one takes seconds to minutes) in a directory every uid can
read, because as root each instance runs as a uid of its own and an unprivileged server reads them too.
``NBFLEET_TEST_IMAGE_DIR`` moves it. Builds are keyed by what they contain, so a changed catalogue builds
anew beside the old environments.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from importlib import resources
from pathlib import Path

from nbfleet.runtime.environments import EnvironmentSpec, ImageEnvironments

TEST_IMAGE_DIR = Path(os.environ.get("NBFLEET_TEST_IMAGE_DIR", "/var/tmp/nbfleet-test-images"))
DEFAULT_IMAGE = "notebook-python3.11"

_lock = threading.Lock()
_built: set[str] = set()


def make_reachable(path: Path) -> Path:
    """Let other uids pass through the test's temporary directories down to ``path`` (pytest makes them
    0700): as root, instances run as uids of their own and their sandbox must reach the data dir."""
    path = Path(path).resolve()
    temp = Path(tempfile.gettempdir()).resolve()
    if os.geteuid() == 0:
        for directory in [*reversed(path.parents), path]:
            if (
                directory.is_relative_to(temp)
                and directory != temp
                and directory.exists()
                and directory.stat().st_uid == 0
            ):
                os.chmod(directory, directory.stat().st_mode & 0o777 | 0o011)
    return path


def catalogue_environment(name: str = DEFAULT_IMAGE) -> dict:
    entries = json.loads(resources.files("nbfleet.catalog").joinpath("images.json").read_text())
    return next(e["environment"] for e in entries if e["name"] == name)


def shared_environments() -> ImageEnvironments:
    """The shared image dir, with the default image built (once per process; cheap when already built)."""
    environments = ImageEnvironments(TEST_IMAGE_DIR, shared=True)
    with _lock:
        if DEFAULT_IMAGE not in _built:
            TEST_IMAGE_DIR.mkdir(parents=True, exist_ok=True)
            if TEST_IMAGE_DIR.stat().st_uid != os.geteuid():
                raise RuntimeError(f"{TEST_IMAGE_DIR} belongs to another user; set NBFLEET_TEST_IMAGE_DIR")
            os.chmod(TEST_IMAGE_DIR, 0o755)
            environments.build(DEFAULT_IMAGE, EnvironmentSpec.from_json(catalogue_environment()))
            _built.add(DEFAULT_IMAGE)
    return environments
