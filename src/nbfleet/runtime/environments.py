"""Images as environments for the local runtime.

An image of the catalogue declares what it holds (``"environment": {"python": "3.11", "packages": [...]}``).
The local runtime builds that into a Python virtual environment once, under the image dir, and every
instance of the image runs in it read-only. What a user installs goes to the instance's own layer
(``pip install --user``, which pip picks by itself because the image is not writable), kept in the
instance's volume.

Layout of the image dir::

    <name>-<digest>/            the environment (bin/python, lib/python3.X/site-packages, ...)
    <name>-<digest>/.nbfleet-image.json
                                written last: the build is complete; what was built, from which interpreter
    .locks/<name>-<digest>      held (flock) while one process builds, so concurrent creates build once

The digest covers the declaration and the interpreter, so a changed declaration builds anew beside
the old environment (instances already running keep theirs).

Environments are built with ``uv`` (seconds) when it is installed, else ``venv`` + ``pip``. Every file is
made world-readable: in root mode each instance runs as a host uid of its own and must read the image.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MARKER = ".nbfleet-image.json"
FORMAT = 1  # bump when the layout of a built environment changes: every image builds anew
BUILD_TIMEOUT = 1800.0
_VERSION = re.compile(r"^3\.\d{1,2}$")
_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-\[\],<>=!~ ]{0,199}$")
_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class ImageEnvironmentError(Exception):
    """An image environment cannot be built or used; the message says why, for the instance's progress."""


@dataclass(frozen=True)
class EnvironmentSpec:
    """What an image holds: a Python version and the packages installed into it."""

    python: str
    packages: tuple[str, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EnvironmentSpec:
        python = str(data.get("python", ""))
        if not _VERSION.match(python):
            raise ImageEnvironmentError(f"image environment: 'python' must look like '3.11', not {python!r}")
        packages = tuple(str(p) for p in data.get("packages") or ())
        for package in packages:
            if not _PACKAGE.match(package) or package.startswith("-"):
                raise ImageEnvironmentError(f"image environment: not a package requirement: {package!r}")
        if not any(_project(p) == "jupyter-server" for p in packages) and not any(
            _project(p) == "jupyterlab" for p in packages
        ):
            raise ImageEnvironmentError("image environment: the packages must include jupyter-server or jupyterlab")
        return cls(python, packages)


def _project(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@dataclass(frozen=True)
class Interpreter:
    """A Python installation on the host that environments are made from."""

    executable: Path  # the real binary, not a shim
    version: str  # "3.11.2"
    prefix: Path  # sys.base_prefix: a sandbox must see it read-only
    site_dirs: tuple[Path, ...]  # its own site-packages: hidden from sandboxes so the image is all they see


@dataclass(frozen=True)
class BuiltEnvironment:
    """A complete environment, as a sandbox needs to know it."""

    path: Path
    python: Path  # path/bin/python
    interpreter: Interpreter

    @property
    def python_minor(self) -> str:
        return ".".join(self.interpreter.version.split(".")[:2])


def reachable_by_others(path: Path) -> bool:
    """Whether any uid may traverse to ``path`` and read it (root mode runs instances as other uids)."""
    path = Path(path)
    try:
        for parent in [*reversed(path.parents), path]:
            mode = parent.stat().st_mode
            if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
                return False
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def _probe(candidate: Path) -> Interpreter | None:
    code = (
        "import json, site, sys; print(json.dumps([sys.executable, '%d.%d.%d' % sys.version_info[:3], "
        "sys.base_prefix, site.getsitepackages()]))"
    )
    try:
        out = subprocess.run(
            [str(candidate), "-I", "-c", code], capture_output=True, text=True, timeout=20, check=True
        ).stdout
        executable, version, prefix, sites = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return Interpreter(Path(executable).resolve(), version, Path(prefix), tuple(Path(s) for s in sites))


def find_interpreter(version: str, preferred: Sequence[Path] = (), *, shared: bool = False) -> Interpreter:
    """A host interpreter of ``version`` ("3.11"). ``shared``: it must be readable by every uid."""
    minor = version
    candidates: list[Path] = [Path(p) for p in preferred]
    candidates += [Path(f"/usr/bin/python{minor}"), Path(f"/usr/local/bin/python{minor}")]
    found = shutil.which(f"python{minor}")
    if found:
        candidates.append(Path(found))
    base = getattr(sys, "_base_executable", None)
    if base:
        candidates.append(Path(base))
    seen: set[Path] = set()
    refused: list[str] = []
    for candidate in candidates:
        if candidate in seen or not candidate.exists():
            continue
        seen.add(candidate)
        interpreter = _probe(candidate)
        if interpreter is None or not interpreter.version.startswith(minor + "."):
            continue
        if shared and not (reachable_by_others(interpreter.executable) and reachable_by_others(interpreter.prefix)):
            refused.append(f"{interpreter.executable} (not readable by other users)")
            continue
        return interpreter
    if refused:
        log.warning("Python %s interpreters that instances of other uids cannot read: %s", minor, ", ".join(refused))
    raise ImageEnvironmentError(
        f"no Python {minor} interpreter on this host to build the image from "
        f"(install python{minor}, or name one in NBFLEET_IMAGE_PYTHONS)"
    )


def _uv() -> str | None:
    try:
        import uv  # the PyPI package ships the binary

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


class ImageEnvironments:
    """Builds and finds image environments under ``root``."""

    def __init__(self, root: Path, *, pythons: Sequence[Path] = (), shared: bool = False, uv: str | None | bool = True):
        """``shared``: instances run as other uids (root mode), so interpreters and files must be
        readable by everyone. ``uv=False`` forces venv + pip."""
        self.root = Path(root)
        self.pythons = tuple(Path(p) for p in pythons)
        self.shared = shared
        self.uv = _uv() if uv is True else (uv or None)
        self._locks: dict[str, asyncio.Lock] = {}
        self._interpreters: dict[str, Interpreter] = {}

    def key(self, name: str, spec: EnvironmentSpec, interpreter: Interpreter) -> str:
        digest = hashlib.sha256(
            json.dumps(
                [FORMAT, spec.python, sorted(spec.packages), str(interpreter.executable), interpreter.version]
            ).encode()
        ).hexdigest()[:12]
        return f"{_NAME.sub('-', name)[:60]}-{digest}"

    def interpreter(self, spec: EnvironmentSpec) -> Interpreter:
        """The host interpreter for ``spec``'s version, found once: finding it runs each candidate."""
        found = self._interpreters.get(spec.python)
        if found is None or not found.executable.exists():
            found = self._interpreters[spec.python] = find_interpreter(spec.python, self.pythons, shared=self.shared)
        return found

    def find(self, name: str, spec: EnvironmentSpec) -> BuiltEnvironment | None:
        """The built environment of this image, or None when it still has to be built."""
        interpreter = self.interpreter(spec)
        return self._complete(self.root / self.key(name, spec, interpreter), interpreter)

    async def ensure(
        self, name: str, spec: EnvironmentSpec, on_build: Callable[[], object] | None = None
    ) -> BuiltEnvironment:
        """The environment, built first if needed (``on_build`` is called before a build starts)."""
        interpreter = await asyncio.to_thread(self.interpreter, spec)
        key = self.key(name, spec, interpreter)
        built = self._complete(self.root / key, interpreter)
        if built is not None:
            return built
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            built = self._complete(self.root / key, interpreter)
            if built is None:
                if on_build is not None:
                    result = on_build()
                    if asyncio.iscoroutine(result):
                        await result
                built = await asyncio.to_thread(self._build_locked, key, spec, interpreter)
        return built

    def build(self, name: str, spec: EnvironmentSpec) -> tuple[BuiltEnvironment, float | None]:
        """Build now if needed (``nbfleet images build``): the environment and the seconds it took (None: was built)."""
        interpreter = self.interpreter(spec)
        key = self.key(name, spec, interpreter)
        built = self._complete(self.root / key, interpreter)
        if built is not None:
            return built, None
        started = time.monotonic()
        built = self._build_locked(key, spec, interpreter)
        return built, time.monotonic() - started

    # -- building --------------------------------------------------------------------------

    def _complete(self, path: Path, interpreter: Interpreter) -> BuiltEnvironment | None:
        if (path / MARKER).is_file() and (path / "bin" / "python").exists():
            return BuiltEnvironment(path, path / "bin" / "python", interpreter)
        return None

    def _build_locked(self, key: str, spec: EnvironmentSpec, interpreter: Interpreter) -> BuiltEnvironment:
        self._make_dir(self.root)
        locks = self.root / ".locks"
        locks.mkdir(mode=0o700, exist_ok=True)
        with open(locks / key, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)  # another process may be building the same image
            path = self.root / key
            built = self._complete(path, interpreter)
            if built is not None:
                return built
            if path.exists():  # a build that died half-way
                _remove(path)
            started = time.monotonic()
            try:
                self._build(path, spec, interpreter)
            except BaseException:
                _remove(path)
                raise
            seconds = time.monotonic() - started
            record = {
                "format": FORMAT,
                "python": spec.python,
                "packages": list(spec.packages),
                "interpreter": str(interpreter.executable),
                "version": interpreter.version,
                "builder": "uv" if self.uv else "pip",
                "seconds": round(seconds, 2),
                "built_at": int(time.time()),
            }
            tmp = path / (MARKER + ".tmp")
            tmp.write_text(json.dumps(record, indent=1))
            os.chmod(tmp, 0o644)
            tmp.replace(path / MARKER)
            _seal(path)
            log.info("image environment %s built in %.1f s", key, seconds)
            return BuiltEnvironment(path, path / "bin" / "python", interpreter)

    def _make_dir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self.shared:  # instances of other uids must reach the environments
            os.chmod(path, 0o755)

    def _build(self, path: Path, spec: EnvironmentSpec, interpreter: Interpreter) -> None:
        if self.uv:
            env = {**_clean_env(), "UV_PYTHON_DOWNLOADS": "never", "UV_LINK_MODE": "copy", "UV_NO_CONFIG": "1"}
            _run([self.uv, "venv", "--quiet", "--seed", "--python", str(interpreter.executable), str(path)], env)
            _run([self.uv, "pip", "install", "--quiet", "--python", str(path / "bin" / "python"), *spec.packages], env)
        else:
            env = _clean_env()
            _run([str(interpreter.executable), "-m", "venv", str(path)], env)
            _run(
                [
                    str(path / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    *spec.packages,
                ],
                env,
            )
        _enable_user_site(path)


def _clean_env() -> dict[str, str]:
    keep = (
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "UV_CACHE_DIR",
        "UV_INDEX_URL",
        "UV_EXTRA_INDEX_URL",
        "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "PIP_CERT",
        "SSL_CERT_FILE",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "NO_PROXY",
        "https_proxy",
        "http_proxy",
        "no_proxy",
    )
    return {k: v for k, v in os.environ.items() if k in keep}


def _run(argv: list[str], env: dict[str, str]) -> None:
    try:
        subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=True,
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: os.umask(0o022),
        )
    except subprocess.CalledProcessError as exc:
        output = " | ".join(line.strip() for line in (exc.stderr or exc.stdout or "").splitlines() if line.strip())[
            -800:
        ]
        raise ImageEnvironmentError(
            f"building the image environment failed ({Path(argv[0]).name} "
            f"{argv[1]}, exit code {exc.returncode}): {output or 'no output'}"
        ) from None
    except subprocess.TimeoutExpired:
        raise ImageEnvironmentError(f"building the image environment took longer than {BUILD_TIMEOUT:g} s") from None
    except OSError as exc:
        raise ImageEnvironmentError(f"building the image environment failed: {exc}") from None


def _enable_user_site(path: Path) -> None:
    """Let ``pip install --user`` land in the instance's layer: a venv that does not include the system
    site-packages disables user site-packages too. The base interpreter's own site-packages are hidden
    from sandboxes instead (``Interpreter.site_dirs``), so the image stays all an instance sees."""
    cfg = path / "pyvenv.cfg"
    lines = [
        line
        for line in cfg.read_text().splitlines()
        if not line.replace(" ", "").startswith("include-system-site-packages=")
    ]
    lines.append("include-system-site-packages = true")
    cfg.write_text("\n".join(lines) + "\n")


def _seal(path: Path) -> None:
    """Readable by every uid (instances of other uids use it), writable by none: even an unsandboxed
    notebook of nbfleet's own user gets pip's --user layer rather than changing the image."""
    for directory, _, files in os.walk(path):
        for name in files:
            full = os.path.join(directory, name)
            mode = os.lstat(full).st_mode
            if stat.S_ISREG(mode):
                os.chmod(full, 0o555 if mode & 0o100 else 0o444)
        os.chmod(directory, 0o555)


def _remove(path: Path) -> None:
    for directory, _, _ in os.walk(path):
        try:
            os.chmod(directory, 0o755)
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)
