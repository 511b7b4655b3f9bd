"""Near-duplicate documents, found while a document is stored: for each batch of its chunk
vectors, one dense search for the nearest chunk of another ready document."""

from __future__ import annotations

import numpy as np

from embedgate.knowledge.vector_store import VectorStore
from embedgate.storage.records import NearDuplicate

BATCH = 256


def find_near_duplicates(
    store: VectorStore,
    store_name: str,
    *,
    ready: set[str],
    doc_id: str,
    vectors: np.ndarray,
    threshold: float,
) -> list[NearDuplicate]:
    """Other ready documents with a chunk at or above `threshold` cosine similarity, most
    similar first, with how many of this document's chunks they match and what share."""
    if not ready:
        return []
    found: dict[str, NearDuplicate] = {}
    for start in range(0, len(vectors), BATCH):
        batch = vectors[start : start + BATCH].tolist()
        for hits in store.dense_many(store_name, batch, 3, exclude_document=doc_id):
            hit = next((h for h in hits if h.document_id in ready), None)
            if hit is None or hit.score < threshold:
                continue
            entry = found.setdefault(
                hit.document_id,
                NearDuplicate(document_id=hit.document_id, chunks=0, max_similarity=0.0, share=0.0),
            )
            entry["chunks"] += 1
            entry["max_similarity"] = round(max(entry["max_similarity"], hit.score), 4)
    for entry in found.values():
        entry["share"] = round(entry["chunks"] / max(len(vectors), 1), 3)
    return sorted(found.values(), key=lambda e: -e["max_similarity"])
