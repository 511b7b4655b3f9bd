"""Gateway mode for rerankers: the model scores pairs elsewhere (vLLM or infinity's
`/v1/rerank`, TEI's `/rerank`, another embedgate), behind the same `PairBackend` seam.

Everything above the backend stays: keys, limits, fair queueing, audit, and the pairs cut
with the model's own tokenizer exactly as the model card says (so the token limit and usage
count the tokens the model scores). Only the pass differs: each sequence's query and document
are decoded back to text (the part the model card's truncation kept) and sent, grouped by
query, to the upstream pool, which checks every score that comes back. The upstream applies
the model's template itself, so an `instruction` cannot be honoured here and is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedgate.engine.backend import BackendDescription, BackendHealth, PairBackend
from embedgate.engine.backends.gateway.runner import UpstreamRunner
from embedgate.engine.backends.gateway.wire import RerankWire
from embedgate.engine.backends.pair_tokenizer import PairTokenizer
from embedgate.engine.config import UpstreamConfig
from embedgate.engine.pooling import FloatArray
from embedgate.engine.rerank_spec import RerankSpec
from embedgate.errors import ErrorKind, ServiceError


class GatewayPairBackend(PairBackend):
    def __init__(
        self,
        tokenizer: PairTokenizer,
        upstreams: Sequence[UpstreamConfig],
        *,
        deadline_s: float = 60.0,
        health_interval_s: float = 5.0,
    ) -> None:
        self.tokenizer = tokenizer
        self.spec = tokenizer.spec
        self.max_tokens = tokenizer.max_tokens
        api = upstreams[0].api if upstreams else "cohere"
        if api not in ("cohere", "tei") or any(u.api != api for u in upstreams):
            raise ValueError("a reranker's upstreams all speak `cohere` (/v1/rerank) or `tei`")
        self.upstreams = UpstreamRunner(
            upstreams,
            wire=RerankWire(api="tei" if api == "tei" else "cohere"),
            dimensions=1,
            deadline_s=deadline_s,
            health_interval_s=health_interval_s,
        )

    @classmethod
    def load(
        cls,
        model_dir: Path,
        spec: RerankSpec,
        upstreams: Sequence[UpstreamConfig],
        *,
        deadline_s: float = 60.0,
        health_interval_s: float = 5.0,
    ) -> GatewayPairBackend:
        """The pair tokenizer of `model_dir` (no weights are read); the upstreams are
        probed once before this returns."""
        try:
            tokenizer = PairTokenizer.load(model_dir, spec)
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"a gateway reranker needs the model's tokenizer: {model_dir} has no usable "
                f"tokenizer.json ({str(exc).splitlines()[0]})"
            ) from None
        return cls(tokenizer, upstreams, deadline_s=deadline_s, health_interval_s=health_interval_s)

    def sequences(
        self, query: str, documents: Sequence[str], instruction: str | None
    ) -> list[list[int]]:
        if instruction is not None:
            raise ServiceError(
                ErrorKind.INVALID_REQUEST,
                "this reranker runs on an upstream server, which applies the model's own "
                "template: an instruction cannot be passed on; leave it out",
                "instruction",
            )
        return self.tokenizer.sequences(query, documents, None)

    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        """Scores (n, 1): the pairs grouped by query, one upstream call per query."""
        pairs = [self.tokenizer.pair_text(s) for s in sequences]
        scores = np.zeros((len(pairs), 1), dtype=np.float32)
        by_query: dict[str, list[int]] = {}
        for index, (query, _) in enumerate(pairs):
            by_query.setdefault(query, []).append(index)
        for indexes in by_query.values():
            scores[indexes] = self.upstreams.call([pairs[i] for i in indexes])
        return scores

    def describe(self) -> BackendDescription:
        return BackendDescription(runtime="gateway", dtype="upstream", device="upstream")

    def health(self) -> BackendHealth:
        return self.upstreams.health()

    def close(self) -> None:
        self.upstreams.close()
