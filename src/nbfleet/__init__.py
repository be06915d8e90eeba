"""nbfleet: notebook instances behind a ModelArts-compatible notebook API."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

# The version is written once, in pyproject.toml; this reads it from the installed package's metadata.
try:
    __version__ = _version("nbfleet")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
