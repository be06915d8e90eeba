"""Named connection profiles in a TOML file, and the environment variables that override them.

File (``$NBFLEET_CONFIG``, else ``$XDG_CONFIG_HOME/nbfleet/config.toml``, else
``~/.config/nbfleet/config.toml``)::

    [profiles.default]
    endpoint = "http://127.0.0.1:8080"
    project_id = "…"
    ak = "…"
    sk = "…"

``NBFLEET_ENDPOINT``, ``NBFLEET_PROJECT_ID``, ``NBFLEET_AK`` and ``NBFLEET_SK`` win over the file,
one field at a time, so a CI job can swap only the secret key of a checked-in profile.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path

from .client import Credentials

DEFAULT_PROFILE = "default"
FIELDS = ("endpoint", "project_id", "ak", "sk")
ENV_VARS = {"endpoint": "NBFLEET_ENDPOINT", "project_id": "NBFLEET_PROJECT_ID", "ak": "NBFLEET_AK", "sk": "NBFLEET_SK"}
# Bare TOML keys only: the file is written by hand-formatting, so a name must never need quoting.
PROFILE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ConfigError(Exception):
    """The profile file or the environment does not give a usable configuration (a usage error)."""


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("NBFLEET_CONFIG"):
        return Path(env["NBFLEET_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]).expanduser() if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "nbfleet" / "config.toml"


def read_profiles(path: Path) -> dict[str, dict[str, str]]:
    """Every profile in the file (an absent file has none)."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    profiles = doc.get("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise ConfigError(f"{path}: 'profiles' must be a table of tables ([profiles.NAME])")
    return {name: {k: str(v) for k, v in values.items()} for name, values in profiles.items()}


def _toml_string(value: str) -> str:
    # JSON's string escapes (\" \\ \n \uXXXX) are all valid in a TOML basic string.
    return json.dumps(value, ensure_ascii=False)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def format_profiles(profiles: Mapping[str, Mapping[str, str]]) -> str:
    lines = ["# nbfleet CLI profiles (written by `nbfleet configure`). Keep this file private.", ""]
    for name, values in profiles.items():
        lines.append(f"[profiles.{name}]")
        ordered = [k for k in FIELDS if k in values] + sorted(k for k in values if k not in FIELDS)
        lines.extend(f"{_toml_key(key)} = {_toml_string(values[key])}" for key in ordered)
        lines.append("")
    return "\n".join(lines)


def write_profile(path: Path, name: str, values: Mapping[str, str]) -> None:
    """Add or replace one profile, keeping the others; the file is created (or left) with mode 0600."""
    if not PROFILE_NAME.match(name):
        raise ConfigError(f"invalid profile name {name!r}: use letters, digits, '-' and '_'")
    profiles = read_profiles(path)
    profiles[name] = {**profiles.get(name, {}), **values}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Write a private temporary file next to it and rename it over: the secret key is never
    # readable by others, not even for a moment, and a crash cannot leave half a file.
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".toml", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(format_profiles(profiles))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve(profile: str | None, env: Mapping[str, str] | None = None) -> Credentials:
    """The credentials to use: the environment's fields over the named profile's."""
    env = os.environ if env is None else env
    path = config_path(env)
    name = profile or DEFAULT_PROFILE
    profiles = read_profiles(path)
    if profile and profile not in profiles:
        raise ConfigError(f"profile {profile!r} not found in {path} (run `nbfleet configure --profile {profile}`)")
    values = dict(profiles.get(name, {}))
    values.update({field: env[var] for field, var in ENV_VARS.items() if env.get(var)})
    missing = [f for f in FIELDS if not values.get(f)]
    if missing:
        hint = ", ".join(ENV_VARS[f] for f in missing)
        raise ConfigError(
            f"no {', '.join(missing)} configured: run `nbfleet configure` (profile {name!r} in {path}) or set {hint}"
        )
    return Credentials(**{f: values[f] for f in FIELDS})
