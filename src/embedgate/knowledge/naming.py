"""Names of the vector-store collections behind a knowledge-base collection.

A collection's chunks live in `kb_<name>_<hash>_g<generation>`; a reindex fills the next
generation and the catalog switches to it in one transaction. Milvus aliases would do the same
inside Milvus, but Milvus Lite does not implement them, and the catalog pointer works on both.
Collections made before 0.5 used `kb_<name>_<hash>` with Milvus's own text analyzer.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from embedgate.errors import ErrorKind, ServiceError

if TYPE_CHECKING:
    from embedgate.storage.catalog import CollectionInfo


def legacy_store_name(name: str) -> str:
    """The store collection of a collection made before 0.5 (Milvus names allow letters,
    digits and '_': readable and unique)."""
    safe = re.sub(r"[^0-9A-Za-z_]", "_", name)[:40]
    return f"kb_{safe}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def store_name_for(name: str, generation: int) -> str:
    return f"{legacy_store_name(name)}_g{generation}"


def generation_of(store_name: str | None) -> int:
    """0 for the pre-0.5 name, else the number after `_g`."""
    if store_name is None:
        return 0
    match = re.search(r"_g(\d+)$", store_name)
    return int(match.group(1)) if match else 0


def rebuild_needed(name: str) -> ServiceError:
    return ServiceError(
        ErrorKind.CONFLICT,
        f"collection {name!r} was built by an earlier embedgate and must be rebuilt once: run "
        f"`embedgate kb reindex {name}`",
    )


def store_name_of(info: CollectionInfo) -> str:
    """The store collection that holds a collection's chunks; a collection made before 0.5
    must be rebuilt first."""
    if info.store_name is None:
        raise rebuild_needed(info.name)
    return info.store_name
