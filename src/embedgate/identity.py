"""Who is calling: roles, permissions and the caller's identity (the table in product.md, made
code). Security decides who a caller is; the knowledge base and the API only read it, so this
sits below both and imports nothing of embedgate."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    READER = "reader"
    WRITER = "writer"
    ADMIN = "admin"
    MONITOR = "monitor"  # Prometheus: reads /metrics and nothing else


class Permission(StrEnum):
    SEARCH = "search"  # search a knowledge base it is granted
    EMBED = "embed"  # POST /v1/embeddings
    WRITE = "write"  # create collections, upload documents
    DELETE = "delete"  # delete documents / collections
    ADMIN = "admin"  # keys, audit log, config, API schema
    METRICS = "metrics"  # GET /metrics


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.READER: frozenset({Permission.SEARCH}),
    Role.WRITER: frozenset({Permission.SEARCH, Permission.EMBED, Permission.WRITE}),
    Role.ADMIN: frozenset(Permission),
    Role.MONITOR: frozenset({Permission.METRICS}),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling, after authentication."""

    subject: str  # key id, or "jwt:<sub>"
    role: Role
    collections: tuple[str, ...] | None = None  # None = every collection
    models: tuple[str, ...] | None = None  # None = every served model
    rpm: int | None = None
    tpm: int | None = None
    via: str = "key"  # "key" or "jwt"

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    def may_see(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def may_use(self, names: tuple[str, ...]) -> bool:
        """Whether it may use the model known by these names (its name and aliases)."""
        return self.models is None or any(name in self.models for name in names)
