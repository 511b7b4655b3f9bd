"""Where chunks live: a small `VectorStore` interface and Milvus behind it.

`MilvusVectorStore` talks to Milvus through `pymilvus.MilvusClient(uri)`: Milvus Lite (a file
under the data dir) by default, a Milvus server or cluster (>= 2.5, which has the BM25
function) when `milvus_uri` says so; the code is the same. Each collection holds a dense
vector (inner product on unit vectors), the chunk text with its place in the source (pages,
character offsets, heading path), and the chunk's search terms as cut by `analysis` (jieba,
stop words, no punctuation), from which Milvus computes a BM25 sparse vector. Hybrid search
runs both searches and fuses them here with weighted reciprocal rank fusion, so each hit keeps
its dense and lexical scores beside the fused one.

There is no in-memory stand-in: every test runs against Milvus Lite, embedded or as a server
on a TCP port.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from embedgate.knowledge.analysis import TextAnalyzer, shared_analyzer
from embedgate.knowledge.milvus_lite import is_embedded, logs_beside

RRF_K = 60
SCHEMA_VERSION = 2  # 1: Milvus's own jieba analyzer on `text` (before 0.5); 2: `terms`
_FIELDS = ["id", "document_id", "chunk_index", "text", "page", "page_end", "start", "end"]
_FIELDS_WITH_HEADINGS = [*_FIELDS, "headings"]


@dataclass(frozen=True)
class ChunkRow:
    id: str
    document_id: str
    chunk_index: int
    text: str
    page: int
    page_end: int
    start: int
    end: int
    headings: tuple[str, ...]
    vector: Sequence[float]


@dataclass(frozen=True)
class Hit:
    """A chunk found. `score` is what the mode ranks by: cosine for dense, BM25 for lexical,
    the fused reciprocal-rank score for hybrid; `dense_score` / `lexical_score` are each
    side's own score where that side found the chunk. `page` / `page_end` are the first and
    last page the chunk spans; `start` / `end` its character offsets in the parsed text."""

    id: str
    document_id: str
    chunk_index: int
    text: str
    page: int
    score: float
    dense_score: float | None = None
    lexical_score: float | None = None
    page_end: int = 0
    start: int = 0
    end: int = 0
    headings: tuple[str, ...] = ()


@dataclass(frozen=True)
class FusionWeights:
    """How much each side counts in hybrid search (weighted reciprocal rank fusion)."""

    dense: float = 1.0
    lexical: float = 1.0


class VectorStore(Protocol):
    """Collections are named by the caller (the catalog keeps the name per collection)."""

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

    def hybrid(
        self,
        name: str,
        vector: Sequence[float],
        query: str,
        top_k: int,
        weights: FusionWeights = ...,
    ) -> list[Hit]: ...

    def chunks(self, name: str, batch: int = 512) -> Iterator[list[ChunkRow]]: ...

    def close(self) -> None: ...


def _headings(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    try:
        parsed = json.loads(value)
    except ValueError:  # rows written before 0.5 joined the path with " > "
        return tuple(str(value).split(" > "))
    return tuple(str(h) for h in parsed) if isinstance(parsed, list) else ()


def _hit(entry: dict[str, Any], *, dense: float | None = None, lexical: float | None = None) -> Hit:
    entity = entry.get("entity", entry)
    score = dense if dense is not None else lexical
    assert score is not None
    page = int(entity["page"])
    return Hit(
        id=str(entry.get("id", entity.get("id"))),
        document_id=str(entity["document_id"]),
        chunk_index=int(entity["chunk_index"]),
        text=str(entity["text"]),
        page=page,
        score=score,
        dense_score=dense,
        lexical_score=lexical,
        page_end=int(entity.get("page_end") or page),
        start=int(entity.get("start") or 0),
        end=int(entity.get("end") or 0),
        headings=_headings(entity.get("headings")),
    )


# Exact search. Measured on Milvus Lite 2.5.1 at 120k x 384 (docs/benchmarks.md): AUTOINDEX
# (HNSW M=18) and IVF_FLAT found 25-41% of the exact top 10 once segments were sealed, the
# same for every ef / nprobe; measured again with them passed in `params` (where Milvus reads
# them: `dense_search_params`), IVF_FLAT at 120k x 64 kept 0.33 for nprobe 1 to 128: Lite
# does not honour them. FLAT finds all of them. A Milvus server may set
# EMBEDGATE_KB_DENSE_INDEX (and KB_DENSE_NPROBE / KB_DENSE_EF) after measuring its own recall.
DENSE_INDEX = "FLAT"


class MilvusVectorStore:
    def __init__(
        self,
        uri: str,
        token: str | None = None,
        analyzer: TextAnalyzer | None = None,
        dense_index: str = DENSE_INDEX,
        nprobe: int = 32,
        ef: int = 128,
    ) -> None:
        from pymilvus import MilvusClient

        self.uri = uri
        self.dense_index = dense_index
        self.nprobe = nprobe  # IVF: clusters searched per query
        self.ef = ef  # HNSW / AUTOINDEX: candidate list (at least the hits asked for)
        # hybrid search's lexical half runs here while the dense half runs on the caller's
        # thread: the two round trips overlap (the client is thread-safe)
        self._beside = concurrent.futures.ThreadPoolExecutor(1, "embedgate-store-lexical")
        if is_embedded(uri):  # the embedded server starts here; its logs stay off /tmp
            with logs_beside(uri):
                self.client = MilvusClient(uri=uri, token=token or "")
        else:
            self.client = MilvusClient(uri=uri, token=token or "")
        self.analyzer = analyzer or shared_analyzer()
        self._lock = threading.Lock()
        self._loaded: set[str] = set()

    def _use(self, name: str) -> str:
        """The collection, loaded into memory once per process (collections come back
        `released` after a restart and refuse searches until loaded)."""
        if name not in self._loaded:
            with self._lock:
                if name not in self._loaded and self.client.has_collection(name):
                    self.client.load_collection(name)
                    self._loaded.add(name)
        return name

    def ensure_collection(self, name: str, dimensions: int) -> None:
        from pymilvus import DataType, Function, FunctionType

        if self.client.has_collection(name):
            self._use(name)
            return
        with self._lock:
            schema = self.client.create_schema(auto_id=False)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=80)
            schema.add_field("document_id", DataType.VARCHAR, max_length=40)
            schema.add_field("chunk_index", DataType.INT64)
            schema.add_field("page", DataType.INT64)
            schema.add_field("page_end", DataType.INT64)
            schema.add_field("start", DataType.INT64)
            schema.add_field("end", DataType.INT64)
            schema.add_field("headings", DataType.VARCHAR, max_length=4000)
            schema.add_field("text", DataType.VARCHAR, max_length=65535)
            # analysed by embedgate (see analysis.py); Milvus only splits on spaces
            schema.add_field(
                "terms",
                DataType.VARCHAR,
                max_length=65535,
                enable_analyzer=True,
                analyzer_params={"tokenizer": "whitespace"},
            )
            schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dimensions)
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["terms"],
                    output_field_names=["sparse"],
                )
            )
            index = self.client.prepare_index_params()
            index.add_index("dense", index_type=self.dense_index, metric_type="IP")
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
            self.client.create_collection(name, schema=schema, index_params=index)
            self._loaded.add(name)

    def drop_collection(self, name: str) -> None:
        if self.client.has_collection(name):
            self.client.drop_collection(name)
        self._loaded.discard(name)

    def upsert(self, name: str, rows: Sequence[ChunkRow]) -> None:
        if not rows:
            return
        data = [
            {
                "id": r.id,
                "document_id": r.document_id,
                "chunk_index": r.chunk_index,
                "page": r.page,
                "page_end": max(r.page_end, r.page),
                "start": r.start,
                "end": r.end,
                "headings": _headings_json(r.headings),
                "text": r.text,
                "terms": self.analyzer.joined(r.text)[:65535],
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
            output_fields=["count(*)"],
        )
        return int(rows[0]["count(*)"]) if rows else 0

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
        """Several queries in one call (one round trip per ingest batch)."""
        flt = f'document_id != "{_quote(exclude_document)}"' if exclude_document else ""
        result = self.client.search(
            self._use(name),
            data=[list(v) for v in vectors],
            anns_field="dense",
            limit=top_k,
            filter=flt,
            output_fields=_FIELDS_WITH_HEADINGS,
            search_params=self.dense_search_params(top_k),
        )
        return [[_hit(e, dense=float(e["distance"])) for e in row] for row in result]

    def dense_search_params(self, top_k: int) -> dict[str, Any]:
        """The approximate indexes' search breadth, passed where Milvus reads it (`params`):
        FLAT is exact and takes none."""
        params: dict[str, Any] = {}
        if self.dense_index.startswith("IVF"):
            params["nprobe"] = self.nprobe
        elif self.dense_index in ("HNSW", "AUTOINDEX"):
            params["ef"] = max(self.ef, top_k)
        return {"metric_type": "IP", "params": params}

    def flush(self, name: str) -> None:
        """Seal freshly written rows into indexed segments (searches scan unsealed rows)."""
        self.client.flush(self._use(name))

    def lexical(self, name: str, query: str, top_k: int) -> list[Hit]:
        terms = self.analyzer.joined(query)
        if not terms:  # only stop words or punctuation: nothing can match
            return []
        try:
            result = self.client.search(
                self._use(name),
                data=[terms],
                anns_field="sparse",
                limit=top_k,
                output_fields=_FIELDS_WITH_HEADINGS,
                search_params={"metric_type": "BM25"},
            )
        except Exception as exc:
            if _no_bm25_statistics(exc):
                return []
            raise
        return [_hit(e, lexical=abs(float(e["distance"]))) for e in result[0]]

    def hybrid(
        self,
        name: str,
        vector: Sequence[float],
        query: str,
        top_k: int,
        weights: FusionWeights = FusionWeights(),
    ) -> list[Hit]:
        """Both searches, fused here (not by Milvus's ranker) so each hit keeps its dense
        and lexical scores beside the fused one."""
        depth = max(top_k * 4, 20)
        lexical = self._beside.submit(self.lexical, name, query, depth)
        dense = self.dense(name, vector, depth)  # a failure here leaves the lexical half be
        return fuse(dense, lexical.result(), top_k, weights)

    def chunks(self, name: str, batch: int = 512) -> Iterator[list[ChunkRow]]:
        """Every stored chunk with its vector, a batch at a time (reindexing reads these)."""
        present = {f["name"] for f in self.client.describe_collection(name)["fields"]}
        iterator = self.client.query_iterator(
            self._use(name),
            batch_size=batch,
            filter="",
            # a collection from before 0.5 has no page_end: read what it has
            output_fields=[f for f in [*_FIELDS_WITH_HEADINGS, "dense"] if f in present],
        )
        try:
            while page := iterator.next():
                yield [_row(entity) for entity in page]
        finally:
            iterator.close()

    def close(self) -> None:
        """Close the client and, for a Milvus Lite file, the embedded server behind it:
        pymilvus starts one per file on first use and would otherwise keep its threads and
        sockets until the process exits."""
        self._beside.shutdown(wait=True)
        self.client.close()
        if is_embedded(self.uri):
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)


def _row(entity: dict[str, Any]) -> ChunkRow:
    page = int(entity["page"])
    return ChunkRow(
        id=str(entity["id"]),
        document_id=str(entity["document_id"]),
        chunk_index=int(entity["chunk_index"]),
        text=str(entity["text"]),
        page=page,
        page_end=int(entity.get("page_end") or page),
        start=int(entity.get("start") or 0),
        end=int(entity.get("end") or 0),
        headings=_headings(entity.get("headings")),
        vector=[float(x) for x in entity["dense"]],
    )


def _headings_json(headings: Sequence[str]) -> str:
    """The heading path as JSON, shortened from the top until it fits the field."""
    path = list(headings)
    while path:
        text = json.dumps(path, ensure_ascii=False)
        if len(text) <= 4000:
            return text
        path = path[1:]
    return "[]"


def _no_bm25_statistics(exc: Exception) -> bool:
    """Milvus Lite 2.5 refuses a BM25 query on a collection with no text yet (its average
    document length is 0, so the query's weights are NaN): that is an empty result."""
    return "Invalid sparse row: NaN or Inf" in str(exc)


def _quote(value: str) -> str:
    if not re.fullmatch(r"[0-9A-Za-z_\-]+", value):
        raise ValueError("identifiers in filters must be simple ids")
    return value


def fuse(
    dense: Sequence[Hit],
    lexical: Sequence[Hit],
    top_k: int,
    weights: FusionWeights = FusionWeights(),
    k: int = RRF_K,
) -> list[Hit]:
    """Weighted reciprocal rank fusion: a hit's score is the sum over the two rankings it
    appears in of weight / (k + rank); its dense and lexical scores are kept beside it."""
    scores: dict[str, float] = {}
    hits: dict[str, Hit] = {}
    sides: dict[str, dict[str, float]] = {}
    for side, ranking, weight in (
        ("dense_score", dense, weights.dense),
        ("lexical_score", lexical, weights.lexical),
    ):
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + weight / (k + rank)
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
