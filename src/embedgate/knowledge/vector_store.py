"""Where chunks live: a small `VectorStore` interface, Milvus behind it, and an in-memory fake.

`MilvusVectorStore` talks to Milvus through `pymilvus.MilvusClient(uri)`: Milvus Lite (a file
under the data dir) by default, a Milvus server or cluster when `milvus_uri` says so; the code
is the same. Each collection has a dense vector (inner product on unit vectors), the chunk
text analysed by jieba (Chinese and English), and a BM25 sparse vector Milvus computes from
that text, so lexical search and hybrid search (reciprocal rank fusion) run inside Milvus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

RRF_K = 60


@dataclass(frozen=True)
class ChunkRow:
    id: str
    document_id: str
    chunk_index: int
    text: str
    page: int
    start: int
    end: int
    headings: str
    vector: Sequence[float]


@dataclass(frozen=True)
class Hit:
    """A chunk found. `score` is what the mode ranks by: cosine for dense, BM25 for lexical,
    the fused reciprocal-rank score for hybrid; `dense_score` / `lexical_score` are each
    side's own score where that side found the chunk."""

    id: str
    document_id: str
    chunk_index: int
    text: str
    page: int
    score: float
    dense_score: float | None = None
    lexical_score: float | None = None


class VectorStore(Protocol):
    def ensure_collection(self, name: str, dimensions: int) -> None: ...

    def drop_collection(self, name: str) -> None: ...

    def upsert(self, name: str, rows: Sequence[ChunkRow]) -> None: ...

    def delete_document(self, name: str, document_id: str) -> None: ...

    def count_document(self, name: str, document_id: str) -> int: ...

    def dense(
        self, name: str, vector: Sequence[float], top_k: int, exclude_document: str | None = None
    ) -> list[Hit]: ...

    def dense_many(
        self,
        name: str,
        vectors: Sequence[Sequence[float]],
        top_k: int,
        exclude_document: str | None = None,
    ) -> list[list[Hit]]: ...

    def flush(self, name: str) -> None: ...

    def lexical(self, name: str, query: str, top_k: int) -> list[Hit]: ...

    def hybrid(self, name: str, vector: Sequence[float], query: str, top_k: int) -> list[Hit]: ...

    def close(self) -> None: ...


def physical_name(name: str) -> str:
    """Milvus names allow letters, digits and '_': keep it readable and unique."""
    safe = re.sub(r"[^0-9A-Za-z_]", "_", name)[:40]
    return f"kb_{safe}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


_FIELDS = ["id", "document_id", "chunk_index", "text", "page"]


def _hit(entry: dict[str, Any], *, dense: float | None = None, lexical: float | None = None) -> Hit:
    entity = entry.get("entity", entry)
    score = dense if dense is not None else lexical
    assert score is not None
    return Hit(
        id=str(entry.get("id", entity.get("id"))),
        document_id=str(entity["document_id"]),
        chunk_index=int(entity["chunk_index"]),
        text=str(entity["text"]),
        page=int(entity["page"]),
        score=score,
        dense_score=dense,
        lexical_score=lexical,
    )


class MilvusVectorStore:
    def __init__(self, uri: str, token: str | None = None) -> None:
        from pymilvus import MilvusClient

        self.uri = uri
        self.client = MilvusClient(uri=uri, token=token or "")
        self._lock = threading.Lock()
        self._loaded: set[str] = set()

    def _use(self, name: str) -> str:
        """The physical name, loaded into memory once per process (collections come back
        `released` after a restart and refuse searches until loaded)."""
        physical = physical_name(name)
        if physical not in self._loaded:
            with self._lock:
                if physical not in self._loaded and self.client.has_collection(physical):
                    self.client.load_collection(physical)
                    self._loaded.add(physical)
        return physical

    def ensure_collection(self, name: str, dimensions: int) -> None:
        from pymilvus import DataType, Function, FunctionType

        physical = physical_name(name)
        if self.client.has_collection(physical):
            self._use(name)
            return
        with self._lock:
            schema = self.client.create_schema(auto_id=False)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=80)
            schema.add_field("document_id", DataType.VARCHAR, max_length=40)
            schema.add_field("chunk_index", DataType.INT64)
            schema.add_field("page", DataType.INT64)
            schema.add_field("start", DataType.INT64)
            schema.add_field("end", DataType.INT64)
            schema.add_field("headings", DataType.VARCHAR, max_length=2000)
            schema.add_field(
                "text",
                DataType.VARCHAR,
                max_length=65535,
                enable_analyzer=True,
                analyzer_params={"tokenizer": "jieba", "filter": ["lowercase"]},
            )
            schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dimensions)
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["text"],
                    output_field_names=["sparse"],
                )
            )
            index = self.client.prepare_index_params()
            index.add_index("dense", index_type="AUTOINDEX", metric_type="IP")
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
            self.client.create_collection(physical, schema=schema, index_params=index)
            self._loaded.add(physical)

    def drop_collection(self, name: str) -> None:
        physical = physical_name(name)
        if self.client.has_collection(physical):
            self.client.drop_collection(physical)
        self._loaded.discard(physical)

    def upsert(self, name: str, rows: Sequence[ChunkRow]) -> None:
        if not rows:
            return
        data = [
            {
                "id": r.id,
                "document_id": r.document_id,
                "chunk_index": r.chunk_index,
                "page": r.page,
                "start": r.start,
                "end": r.end,
                "headings": r.headings[:2000],
                "text": r.text,
                "dense": [float(x) for x in r.vector],
            }
            for r in rows
        ]
        # chunk ids are new for every ingest run (a re-run deletes the old rows first), so a
        # plain insert is enough; Milvus Lite's upsert pays a delete per row
        self.client.insert(self._use(name), data)

    def delete_document(self, name: str, document_id: str) -> None:
        self.client.delete(self._use(name), filter=f'document_id == "{_quote(document_id)}"')

    def count_document(self, name: str, document_id: str) -> int:
        rows = self.client.query(
            self._use(name),
            filter=f'document_id == "{_quote(document_id)}"',
            output_fields=["id"],
            limit=16384,
        )
        return len(rows)

    def dense(
        self, name: str, vector: Sequence[float], top_k: int, exclude_document: str | None = None
    ) -> list[Hit]:
        return self.dense_many(name, [vector], top_k, exclude_document)[0]

    def dense_many(
        self,
        name: str,
        vectors: Sequence[Sequence[float]],
        top_k: int,
        exclude_document: str | None = None,
    ) -> list[list[Hit]]:
        """Several queries in one call (Milvus Lite pays a per-call scan of its rows)."""
        flt = f'document_id != "{_quote(exclude_document)}"' if exclude_document else ""
        result = self.client.search(
            self._use(name),
            data=[list(v) for v in vectors],
            anns_field="dense",
            limit=top_k,
            filter=flt,
            output_fields=_FIELDS,
            search_params={"metric_type": "IP"},
        )
        return [[_hit(e, dense=float(e["distance"])) for e in row] for row in result]

    def flush(self, name: str) -> None:
        """Seal freshly written rows into indexed segments (searches scan unsealed rows)."""
        self.client.flush(self._use(name))

    def lexical(self, name: str, query: str, top_k: int) -> list[Hit]:
        try:
            result = self.client.search(
                self._use(name),
                data=[query],
                anns_field="sparse",
                limit=top_k,
                output_fields=_FIELDS,
                search_params={"metric_type": "BM25"},
            )
        except Exception as exc:
            if _no_bm25_statistics(exc):
                return []
            raise
        return [_hit(e, lexical=abs(float(e["distance"]))) for e in result[0]]

    def hybrid(self, name: str, vector: Sequence[float], query: str, top_k: int) -> list[Hit]:
        """Both searches, fused here (not by Milvus's ranker) so each hit keeps its dense
        and lexical scores beside the fused one."""
        depth = max(top_k * 4, 20)
        return fuse(self.dense(name, vector, depth), self.lexical(name, query, depth), top_k)

    def close(self) -> None:
        """Close the client and, for a Milvus Lite file, the embedded server behind it:
        pymilvus starts one per file on first use and would otherwise keep its threads and
        sockets until the process exits."""
        self.client.close()
        if not self.uri.startswith(("http://", "https://", "tcp://", "unix:")):
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)


def _no_bm25_statistics(exc: Exception) -> bool:
    """Milvus Lite 2.5 refuses a BM25 query on a collection with no text yet (its average
    document length is 0, so the query's weights are NaN): that is an empty result."""
    return "Invalid sparse row: NaN or Inf" in str(exc)


def _quote(value: str) -> str:
    if not re.fullmatch(r"[0-9A-Za-z_\-]+", value):
        raise ValueError("identifiers in filters must be simple ids")
    return value


# --- the in-memory fake ---------------------------------------------------------------------
_WORD = re.compile(r"[0-9a-z]+|[\u4e00-\u9fff]", re.IGNORECASE)


def _terms(text: str) -> list[str]:
    return [t.lower() for t in _WORD.findall(text)]


def fuse(dense: Sequence[Hit], lexical: Sequence[Hit], top_k: int, k: int = RRF_K) -> list[Hit]:
    """Reciprocal rank fusion: a hit's score is the sum of 1 / (k + rank) over the two
    rankings it appears in; its dense and lexical scores are kept beside it."""
    scores: dict[str, float] = {}
    hits: dict[str, Hit] = {}
    sides: dict[str, dict[str, float]] = {}
    for side, ranking in (("dense_score", dense), ("lexical_score", lexical)):
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (k + rank)
            hits.setdefault(hit.id, hit)
            sides.setdefault(hit.id, {})[side] = hit.score
    order = sorted(scores, key=lambda i: scores[i], reverse=True)[:top_k]
    return [
        dataclasses.replace(
            hits[i],
            score=scores[i],
            dense_score=sides[i].get("dense_score"),
            lexical_score=sides[i].get("lexical_score"),
        )
        for i in order
    ]


class MemoryVectorStore:
    """Same behaviour in process memory: exact dense search, a small BM25, RRF."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, ChunkRow]] = {}

    def close(self) -> None:
        """Nothing to release: the rows go with the object."""

    def ensure_collection(self, name: str, dimensions: int) -> None:
        self._rows.setdefault(name, {})

    def drop_collection(self, name: str) -> None:
        self._rows.pop(name, None)

    def upsert(self, name: str, rows: Sequence[ChunkRow]) -> None:
        for row in rows:
            self._rows[name][row.id] = row

    def delete_document(self, name: str, document_id: str) -> None:
        table = self._rows.get(name, {})
        for key in [k for k, r in table.items() if r.document_id == document_id]:
            del table[key]

    def count_document(self, name: str, document_id: str) -> int:
        return sum(1 for r in self._rows.get(name, {}).values() if r.document_id == document_id)

    @staticmethod
    def _to_hit(row: ChunkRow, score: float, side: str) -> Hit:
        return Hit(
            row.id,
            row.document_id,
            row.chunk_index,
            row.text,
            row.page,
            score,
            dense_score=score if side == "dense_score" else None,
            lexical_score=score if side == "lexical_score" else None,
        )

    def dense(
        self, name: str, vector: Sequence[float], top_k: int, exclude_document: str | None = None
    ) -> list[Hit]:
        scored = [
            (sum(a * b for a, b in zip(vector, r.vector, strict=True)), r)
            for r in self._rows.get(name, {}).values()
            if r.document_id != exclude_document
        ]
        scored.sort(key=lambda t: t[0], reverse=True)
        return [self._to_hit(r, s, "dense_score") for s, r in scored[:top_k]]

    def dense_many(
        self,
        name: str,
        vectors: Sequence[Sequence[float]],
        top_k: int,
        exclude_document: str | None = None,
    ) -> list[list[Hit]]:
        return [self.dense(name, v, top_k, exclude_document) for v in vectors]

    def flush(self, name: str) -> None:
        pass

    def lexical(self, name: str, query: str, top_k: int) -> list[Hit]:
        rows = list(self._rows.get(name, {}).values())
        docs = [Counter(_terms(r.text)) for r in rows]
        avg = sum(sum(d.values()) for d in docs) / max(len(docs), 1)
        scored = []
        for row, terms in zip(rows, docs, strict=True):
            score = 0.0
            for term in set(_terms(query)):
                df = sum(1 for d in docs if term in d)
                if not terms[term]:
                    continue
                idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                tf = terms[term]
                score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * sum(terms.values()) / avg))
            if score > 0:
                scored.append((score, row))
        scored.sort(key=lambda t: t[0], reverse=True)
        return [self._to_hit(r, s, "lexical_score") for s, r in scored[:top_k]]

    def hybrid(self, name: str, vector: Sequence[float], query: str, top_k: int) -> list[Hit]:
        depth = max(top_k * 4, 20)
        return fuse(self.dense(name, vector, depth), self.lexical(name, query, depth), top_k)
