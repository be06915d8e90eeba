"""nbfleet as a test double for code that calls the ModelArts notebook API (docs/testing.md).

``with emulator() as env:`` (or the pytest fixtures ``nbfleet_server`` and ``modelarts_client``, registered by
this package's pytest plugin) gives an nbfleet on a loopback port with the simulated runtime, a throwaway store
and a clock the test moves. Importing this package loads neither Jupyter nor a database server.
"""

from __future__ import annotations

from .emulation import Clock, Emulator, EmulatorError, User, emulator, sdk_client, start_emulator

__all__ = ["Clock", "Emulator", "EmulatorError", "User", "emulator", "sdk_client", "start_emulator"]
