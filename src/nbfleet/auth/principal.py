"""The caller of a request, as resolved from an access key or a token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Principal:
    user_id: str
    user_name: str
    is_admin: bool
    project_id: str  # the project this request is scoped to
    domain_id: str
    domain_name: str

    def user_json(self) -> dict[str, Any]:
        return {"id": self.user_id, "name": self.user_name, "domain": {"id": self.domain_id, "name": self.domain_name}}
