"""Where users reach an instance's Jupyter, and which requests are for one.

Every instance has an origin of its own (``host`` routing, the default): ``<id>.<notebook domain>`` on
nbfleet's scheme and port, e.g. ``http://<id>.nb.localhost:8080/``. A notebook's owner controls every
byte its Jupyter serves, so its pages must never share an origin with the console, the API or another
instance. ``*.localhost`` resolves to the loopback in browsers, which makes the default work with no DNS;
a deployment sets a wildcard domain (``*.nb.example.com``) in DNS and on its TLS certificate.

``path`` routing (``/notebooks/<id>/`` on nbfleet's own origin) is kept for single-user set-ups only:
there, any notebook's page can act as whoever opens it, on the console and on every other notebook.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

PATH_PREFIX = "/notebooks"


@dataclass(frozen=True)
class NotebookAddresses:
    routing: str  # "host" | "path"
    public_url: str  # nbfleet's own base URL, no trailing slash
    domain: str  # host routing: instances are <id>.<domain>
    ssh: str | None = None  # host:port of the SSH gateway; None: no SSH here

    def ssh_uri(self, notebook_id: str) -> str | None:
        """Where to connect with SSH: the instance's id is the user name (the gateway routes by it)."""
        return f"ssh://{notebook_id}@{self.ssh}" if self.ssh else None

    @property
    def per_instance_origin(self) -> bool:
        return self.routing == "host"

    def base(self, notebook_id: str) -> str:
        """The instance's Jupyter root as users reach it (no trailing slash)."""
        if not self.per_instance_origin:
            return f"{self.public_url}{PATH_PREFIX}/{notebook_id}"
        parts = urlsplit(self.public_url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{notebook_id}.{self.domain}{port}"

    def notebook_of_host(self, host_header: str | None) -> str | None:
        """For a request whose Host lies under the notebook domain (host routing): the instance it names,
        or "" when it names none (``a.b.<domain>``, the domain itself), which nbfleet must not serve either.
        None for nbfleet's own hosts."""
        if not host_header or not self.per_instance_origin:
            return None
        host = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
        host = host.lower().rstrip(".")
        if host == self.domain:
            return ""
        suffix = "." + self.domain
        if not host.endswith(suffix):
            return None
        label = host[: -len(suffix)]
        return label if label and "." not in label else ""
