"""GGUF models through llama.cpp (`llama-cpp-python`, the optional `embedgate[gguf]` extra),
behind the same Backend seam as the PyTorch models.

Everything above the backend is unchanged: the engine applies the Qwen3 instruction, checks
limits, queues fairly, batches and slices Matryoshka `dimensions`. Here, the text is cut by the
GGUF's own tokenizer (llama.cpp's, which for Qwen3 gives the Hugging Face ids: tested), the
family's template is applied (`<|endoftext|>` appended to every Qwen3 sequence), and a pass
runs as llama.cpp decodes of whole sequences, each sequence its own `seq_id`, pooled by
llama.cpp on the last token (the family's rule), never by the pooling the file asks for.
Normalisation stays in `postprocess`, as for every backend.

A pass is cut into decodes of about `group_tokens` (512) tokens of several sequences: larger
decodes were slower and grow llama.cpp's compute buffer, smaller ones slower too
(docs/benchmarks.md, "GGUF through llama.cpp").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedgate.engine.backend import Backend, BackendDescription, TextOptions
from embedgate.engine.backends.gguf.file import GGUFFacts, _missing_extra, read_gguf, spec_for
from embedgate.engine.model_spec import ModelSpec
from embedgate.engine.pooling import FloatArray
from embedgate.engine.sequences import SequenceTemplate

QWEN3_EOS_TEXT = "<|endoftext|>"


DEFAULT_GROUP_TOKENS = 512


@dataclass(frozen=True)
class GGUFOptions:
    """llama.cpp's sizes, chosen for the machine and the token budget."""

    threads: int
    group_tokens: int  # tokens per llama.cpp decode of several sequences
    context_tokens: int  # n_ctx = n_batch: room for the longest allowed sequence
    ubatch_tokens: int  # n_ubatch: what llama.cpp computes at once
    max_sequences: int  # sequences per decode (n_seq_max)


def choose_gguf_options(
    spec: ModelSpec, *, cores: int, group_tokens: int | None = None
) -> GGUFOptions:
    """All cores to the one llama.cpp context (it runs one decode at a time); decodes of
    about `DEFAULT_GROUP_TOKENS` tokens (measured best on a 2-core CPU: benchmarks/gguf.py);
    room in the context for the longest allowed input (a long Qwen3 sequence spans several
    ubatches: its attention is causal, so the cache carries it over)."""
    group = max(16, group_tokens or DEFAULT_GROUP_TOKENS)
    context = max(group, spec.max_tokens)
    return GGUFOptions(
        threads=max(1, cores),
        group_tokens=group,
        context_tokens=context,
        ubatch_tokens=group,
        max_sequences=max(1, min(256, group // 8)),
    )


class GGUFBackend(Backend):
    def __init__(self, facts: GGUFFacts, spec: ModelSpec, options: GGUFOptions) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise _missing_extra() from None
        self.facts = facts
        self.options = options
        self.spec = spec
        self._llama_cpp = llama_cpp
        internals: Any = llama_cpp._internals  # the model / context / batch wrappers (untyped)
        llama_cpp._logger.set_verbose(False)  # llama.cpp logs errors only
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        model_params.use_mmap = True
        # no AMX / repacked weight buffers: llama.cpp's AMX path crashed in decode on the
        # machines we test on (Sapphire Rapids, Q8_0 and Q4_0); the plain CPU kernels are
        # used instead, measured in benchmarks/gguf.py
        model_params.use_extra_bufts = False
        self._model = internals.LlamaModel(
            path_model=str(facts.path), params=model_params, verbose=False
        )
        context_params = llama_cpp.llama_context_default_params()
        context_params.n_ctx = options.context_tokens
        context_params.n_batch = options.context_tokens
        context_params.n_ubatch = options.ubatch_tokens
        context_params.n_seq_max = options.max_sequences
        context_params.n_threads = options.threads
        context_params.n_threads_batch = options.threads
        context_params.embeddings = True
        context_params.kv_unified = True  # one cache of n_ctx cells shared by the sequences
        context_params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_LAST
        if facts.quantization == "F32":
            # a full-precision file computes in full precision: flash attention and the
            # default KV cache round keys and values to F16 (~2e-4 off the PyTorch vectors)
            context_params.type_k = llama_cpp.GGML_TYPE_F32
            context_params.type_v = llama_cpp.GGML_TYPE_F32
            context_params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._context = internals.LlamaContext(
            model=self._model, params=context_params, verbose=False
        )
        self._batch = internals.LlamaBatch(
            n_tokens=options.context_tokens, embd=0, n_seq_max=options.max_sequences, verbose=False
        )
        self.template = self._template()

    @classmethod
    def load(
        cls, path: Path, text: TextOptions, *, cores: int, group_tokens: int | None = None
    ) -> GGUFBackend:
        """Read the file's facts (refusing what is not an embedding GGUF) and load it."""
        facts = read_gguf(path)
        spec = spec_for(facts, text.max_input_tokens)
        return cls(facts, spec, choose_gguf_options(spec, cores=cores, group_tokens=group_tokens))

    def _template(self) -> SequenceTemplate:
        vocab = self._model.n_vocab()
        eos = self._token_id(QWEN3_EOS_TEXT)
        return SequenceTemplate.for_model((), (eos,), vocab, self.spec.max_tokens, eos)

    def _token_id(self, text: str) -> int:
        ids = self._model.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if len(ids) != 1:
            raise ValueError(f"{self.facts.path.name} has no single {text} token")
        return int(ids[0])

    # --- the seam ------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Content ids by the file's tokenizer; special-token text is parsed as the Hugging
        Face tokenizer does, so both backends see the same ids."""
        return [
            list(self._model.tokenize(text.encode("utf-8"), add_bos=False, special=True))
            if text
            else []
            for text in texts
        ]

    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        out = np.empty((len(sequences), self.spec.native_dimensions), dtype=np.float32)
        group: list[int] = []
        tokens = 0
        for row, sequence in enumerate(sequences):
            if group and (
                tokens + len(sequence) > self.options.group_tokens
                or len(group) >= self.options.max_sequences
            ):
                self._decode(sequences, group, out)
                group, tokens = [], 0
            group.append(row)
            tokens += len(sequence)
        if group:
            self._decode(sequences, group, out)
        return out

    def _decode(self, sequences: Sequence[Sequence[int]], rows: list[int], out: FloatArray) -> None:
        llama_cpp = self._llama_cpp
        context = self._context
        context.kv_cache_clear()
        self._batch.reset()
        for seq_id, row in enumerate(rows):
            self._batch.add_sequence(list(sequences[row]), seq_id, True)
        context.decode(self._batch)
        n = self.spec.native_dimensions
        for seq_id, row in enumerate(rows):
            pointer = llama_cpp.llama_get_embeddings_seq(context.ctx, seq_id)
            if not pointer:
                raise RuntimeError("llama.cpp returned no embedding for a sequence")
            out[row] = np.ctypeslib.as_array(pointer, shape=(n,))

    def pass_length(self, longest: int) -> int:
        return longest  # sequences are decoded at their own lengths: no padding

    def describe(self) -> BackendDescription:
        quantization = self.facts.quantization
        return BackendDescription(
            runtime="gguf", dtype=quantization, device="cpu", quantization=quantization
        )

    def close(self) -> None:
        self._batch.close()
        self._context.close()
        self._model.close()
