"""Whether the model can read a collection: its chunks per language against the languages
the model covers (from its model card). An English-only model on a Chinese handbook makes
dense search weak; the collection's info says so, and the server logs it once."""

from __future__ import annotations

import logging

from embedgate.engine import EmbeddingEngine

log = logging.getLogger(__name__)

WARN_ABOVE = 0.5


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
