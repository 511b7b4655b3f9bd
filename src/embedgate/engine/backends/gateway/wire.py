"""What a gateway says to its upstreams and how it reads their answers, one class per API.

The upstream pool (`upstream.py`) does the same for every API: batches, picks, retries,
ejects and probes. A wire knows the rest: the route, the request body, what a correct answer
looks like (anything else ejects the upstream), and the probe whose answer must stay the
same for an upstream to count as serving the same model.

- `EmbeddingWire`: OpenAI `/v1/embeddings` (vLLM, SGLang, TEI, Ollama, infinity, another
  embedgate): finite unit vectors of the model's dimension; base64, floats from an upstream
  that refuses base64.
- `RerankWire`: Cohere / Jina `/v1/rerank` (vLLM, infinity, another embedgate) or TEI's
  `/rerank`: one score in [0, 1] per document, each index once.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

PROBE_TEXT = "embedgate probe: 企业知识库 / enterprise knowledge base"
PROBE_PAIR = ("how many days of annual leave do employees get", PROBE_TEXT)
SAME_MODEL_COSINE = 0.999
SAME_MODEL_SCORE = 0.01  # the probe pair's score may move this much between replicas


class WireFault(Exception):
    """An answer the wire cannot use: the upstream is broken (it is ejected)."""


class Wire(Protocol):
    """One upstream API. Items are texts (embeddings) or (query, document) pairs of one
    query (rerank); `decode` returns one row per item."""

    @property
    def label(self) -> str: ...  # "embedding" or "rerank", for messages
    @property
    def path(self) -> str: ...

    def body(self, items: list[Any], model: str | None, *, base64_ok: bool) -> dict[str, Any]: ...
    def decode(self, payload: Any, count: int) -> np.ndarray: ...
    def probe(self) -> list[Any]: ...
    def same_model(self, reference: np.ndarray, answer: np.ndarray) -> bool: ...


@dataclass(frozen=True)
class EmbeddingWire:
    label: str = "embedding"
    path: str = "/v1/embeddings"

    def body(self, items: list[Any], model: str | None, *, base64_ok: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"input": items}
        if model:
            body["model"] = model
        if base64_ok:
            body["encoding_format"] = "base64"
        return body

    def decode(self, payload: Any, count: int) -> np.ndarray:
        vectors = decode_vectors(payload, count)
        check_vectors(vectors, None)  # the pool checks the dimension
        return vectors

    def probe(self) -> list[Any]:
        return [PROBE_TEXT]

    def same_model(self, reference: np.ndarray, answer: np.ndarray) -> bool:
        return len(answer) == len(reference) and float(answer @ reference) >= SAME_MODEL_COSINE


@dataclass(frozen=True)
class RerankWire:
    api: Literal["cohere", "tei"] = "cohere"
    label: str = "rerank"

    @property
    def path(self) -> str:
        return "/v1/rerank" if self.api == "cohere" else "/rerank"

    def body(self, items: list[Any], model: str | None, *, base64_ok: bool) -> dict[str, Any]:
        queries = {query for query, _ in items}
        assert len(queries) == 1, "one upstream call scores documents of one query"
        documents = [document for _, document in items]
        if self.api == "tei":
            return {"query": queries.pop(), "texts": documents, "raw_scores": False}
        body: dict[str, Any] = {
            "query": queries.pop(),
            "documents": documents,
            "top_n": len(documents),
            "return_documents": False,
        }
        if model:
            body["model"] = model
        return body

    def decode(self, payload: Any, count: int) -> np.ndarray:
        """Scores in document order: Cohere's `results` or TEI's bare list, each index once,
        each score a finite number in [0, 1]."""
        rows = payload.get("results") if isinstance(payload, dict) else payload
        if not isinstance(rows, list) or len(rows) != count:
            raise WireFault(f"expected {count} scores, got {_size(rows)}")
        scores = np.full(count, np.nan, dtype=np.float32)
        for row in rows:
            index = row.get("index") if isinstance(row, dict) else None
            value = row.get("relevance_score", row.get("score")) if isinstance(row, dict) else None
            if not isinstance(index, int) or not 0 <= index < count or not np.isnan(scores[index]):
                raise WireFault("the scores' indexes are not 0..n-1")
            if not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
                raise WireFault(f"a score that is not a number in [0, 1]: {value!r}")
            scores[index] = float(value)
        return scores.reshape(count, 1)

    def probe(self) -> list[Any]:
        return [PROBE_PAIR]

    def same_model(self, reference: np.ndarray, answer: np.ndarray) -> bool:
        return bool(abs(float(answer[0]) - float(reference[0])) <= SAME_MODEL_SCORE)


def decode_vectors(payload: Any, count: int) -> np.ndarray:
    """The `data` of an embeddings response, in index order, as float32 rows."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or len(data) != count:
        raise WireFault(f"expected {count} embeddings, got {_size(data)}")
    rows: list[np.ndarray | None] = [None] * count
    for position, item in enumerate(data):
        index = item.get("index", position)
        raw = item.get("embedding")
        if isinstance(raw, str):
            vector = np.frombuffer(base64.b64decode(raw), dtype="<f4")
        else:
            vector = np.asarray(raw, dtype=np.float32)
        if not 0 <= index < count or rows[index] is not None:
            raise WireFault("the embeddings' indexes are not 0..n-1")
        rows[index] = vector
    return np.stack([r for r in rows if r is not None])


def check_vectors(vectors: np.ndarray, dimensions: int | None) -> None:
    """Finite, of the expected dimension, unit norm: anything else is a broken upstream."""
    if vectors.ndim != 2 or (dimensions is not None and vectors.shape[1] != dimensions):
        raise WireFault(f"vectors of dimension {vectors.shape[-1]}, expected {dimensions}")
    if not np.isfinite(vectors).all():
        raise WireFault("vectors with NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        raise WireFault("vectors that are not unit length")


def _size(rows: object) -> int:
    return len(rows) if isinstance(rows, list) else 0
