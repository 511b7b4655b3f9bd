"""A collection and the served model: is it the model the collection was built with (its
name and, in gateway mode, its fingerprint), and can the model read the collection (its
chunks per language against the languages the model covers, from its model card; an
English-only model on a Chinese handbook makes dense search weak: the collection's info says
so, and the server logs it once)."""

from __future__ import annotations

import logging

from embedgate.engine import EmbeddingEngine
from embedgate.errors import ErrorKind, ServiceError
from embedgate.storage.catalog import CollectionInfo

log = logging.getLogger(__name__)

WARN_ABOVE = 0.5


def check_same_model(
    engine: EmbeddingEngine, collection: CollectionInfo, asked: str | None = None
) -> None:
    """Refuse to mix vectors: the collection's model name (or the one the request names) and,
    in gateway mode, the upstream model's fingerprint must be this server's."""
    fingerprint = engine.describe().fingerprint
    if (asked is not None and asked != collection.model) or engine.name != collection.model:
        served = asked or engine.name
    elif fingerprint and collection.fingerprint and fingerprint != collection.fingerprint:
        served = f"{engine.name} (another model behind that name: fingerprint {fingerprint})"
    else:
        return
    raise ServiceError(
        ErrorKind.CONFLICT,
        f"collection {collection.name!r} was embedded with {collection.model!r}; using it "
        f"with {served} would mix vectors from different models (reindex it to switch)",
        "model",
    )


def uncovered_share(engine: EmbeddingEngine | None, languages: dict[str, int]) -> float:
    """The share of chunks in languages the model does not cover (0 without a model)."""
    total = sum(languages.values())
    if engine is None or not total:
        return 0.0
    return sum(n for lang, n in languages.items() if not engine.spec.covers(lang)) / total


class CoverageWarnings:
    """Logs once per collection and process when most of it is outside the model's reach."""

    def __init__(self) -> None:
        self._warned: set[str] = set()

    def check(self, collection: str, engine: EmbeddingEngine, languages: dict[str, int]) -> None:
        share = uncovered_share(engine, languages)
        if share > WARN_ABOVE and collection not in self._warned:
            self._warned.add(collection)
            log.warning(
                "most of this collection is in a language the model does not cover; dense "
                "search will be weak and hybrid search leans on lexical",
                extra={"collection": collection, "model": engine.name, "share": round(share, 2)},
            )
