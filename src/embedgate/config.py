"""Settings as data: one pydantic-settings class, read from init arguments, the environment
(`EMBEDGATE_<NAME>`) and a TOML file, in that order of precedence.

There is no module-level settings object: `create_app(settings)` and the CLI build one and pass
it down. Every field carries a description; `docs/configuration.md` must document each of them
(a test enforces it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "EMBEDGATE_"

DType = Literal["float32", "bfloat16", "auto"]
Device = Literal["auto", "cpu", "cuda"]
LogFormat = Literal["json", "text"]


class Upstream(BaseModel):
    """One upstream in gateway mode, as a TOML table (`[[upstreams]]`) or a JSON object;
    a plain URL takes the `upstream_*` settings for everything else."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    model: str | None = None
    api_key_file: Path | None = None
    api_key_env: str | None = None
    max_batch: int | None = Field(default=None, ge=1, le=4096)
    max_concurrency: int | None = Field(default=None, ge=1, le=1024)
    weight: float = Field(default=1.0, gt=0, le=1000)
    timeout_s: float | None = Field(default=None, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _upstream_url(value)


class ModelEntry(BaseModel):
    """One more served model, as a TOML table (`[[models]]`) or a JSON object; a plain path
    (a repeated `--model`) takes the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str  # a local model directory
    name: str | None = None  # what clients send in `model`; default: the directory's name
    task: Literal["embed", "rerank"] | None = None  # None: read from the directory
    dtype: Literal["float32", "bfloat16", "auto"] | None = None  # None: the server's `dtype`
    aliases: list[str] = Field(default_factory=list)
    # gateway mode for this model (a reranker): it runs on these servers, `path` gives its
    # tokenizer and config; `upstream_api` is what they speak: `cohere` (vLLM, infinity,
    # Jina, another embedgate: POST /v1/rerank) or `tei` (POST /rerank)
    upstreams: list[str] = Field(default_factory=list)
    upstream_api: Literal["cohere", "tei"] = "cohere"
    upstream_model: str | None = None  # the name the upstreams expect; default: `name`
    # this model's own limits; None: the server's setting of the same name
    max_input_tokens: int | None = Field(default=None, ge=8)
    max_batch_tokens: int | None = Field(default=None, ge=64)
    max_inputs_per_request: int | None = Field(default=None, ge=1)
    max_request_tokens: int | None = Field(default=None, ge=1)
    max_queued_tokens: int | None = Field(default=None, ge=1)
    max_queue_seconds: float | None = Field(default=None, gt=0)


# the limits a `[[models]]` table may set for its model alone
MODEL_LIMITS = (
    "max_input_tokens",
    "max_batch_tokens",
    "max_inputs_per_request",
    "max_request_tokens",
    "max_queued_tokens",
    "max_queue_seconds",
)


def _upstream_url(value: str) -> str:
    """`http://host:port`, with or without `/v1` and a trailing slash (the pool takes the
    server's root from either)."""
    if not value.strip().startswith(("http://", "https://")):
        raise ValueError(f"an upstream URL starts with http:// or https://, got {value!r}")
    return value.strip()


class Settings(BaseSettings):
    """Everything an operator can set. Names are part of the product: keep them stable."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    config: Path | None = Field(
        default=None, description="TOML file with settings (keys are the field names)."
    )

    # --- serving -----------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Address to bind; loopback by default.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to listen on.")
    data_dir: Path = Field(default=Path("./data"), description="Directory for all local state.")
    log_level: str = Field(default="info", description="Python log level name.")
    log_format: LogFormat = Field(
        default="json", description="`json` (one object per line, for ELK / Loki) or `text`."
    )

    # --- model -------------------------------------------------------------------------------
    model: str | None = Field(
        default=None,
        description="Local model directory or Hugging Face id; empty = bundled all-MiniLM-L6-v2.",
    )
    model_name: str | None = Field(
        default=None,
        description="Name clients send in `model`; defaults to the model directory's name.",
    )
    model_aliases: list[str] = Field(
        default_factory=list, description="Extra names accepted in the `model` field."
    )
    models: Annotated[list[str | ModelEntry], NoDecode] = Field(
        default_factory=list,
        description="More models served beside `model` (today: rerankers). Paths (a repeated "
        "--model; comma-separated in the environment) or tables with path, name, task "
        "(embed | rerank, read from the directory when left out), dtype, aliases.",
    )
    upstreams: Annotated[list[str | Upstream], NoDecode] = Field(
        default_factory=list,
        description="Gateway mode: OpenAI-compatible embedding servers (vLLM, SGLang, TEI, "
        "Ollama, another embedgate) that run the model; `model` then names only its "
        "tokenizer directory. URLs (comma-separated in the environment) or tables with "
        "url, model, api_key_file, api_key_env, max_batch, max_concurrency, weight, timeout_s.",
    )
    upstream_model: str | None = Field(
        default=None, description="The model name the upstreams expect; default `model_name`."
    )
    upstream_api_key_file: Path | None = Field(
        default=None, description="0600 file with the upstreams' API key (never a CLI value)."
    )
    upstream_api_key_env: str | None = Field(
        default=None, description="Name of an environment variable holding the upstreams' key."
    )
    upstream_max_batch: int = Field(
        default=64, ge=1, le=4096, description="Inputs per upstream call."
    )
    upstream_max_concurrency: int = Field(
        default=8, ge=1, le=1024, description="Calls in flight per upstream."
    )
    upstream_timeout_s: float = Field(
        default=30.0, gt=0, description="Time limit of one upstream call (then another one)."
    )
    upstream_deadline_s: float = Field(
        default=60.0,
        gt=0,
        description="Time limit of one batch in gateway mode, retries on other upstreams "
        "included; then 503 with Retry-After.",
    )
    upstream_health_interval_s: float = Field(
        default=5.0,
        ge=0.2,
        le=300,
        description="Every upstream is probed this often, traffic or not (a dead one is "
        "ejected, a recovered one admitted); a probe slower than this fails.",
    )
    dtype: DType = Field(
        default="float32",
        description="Compute dtype: float32, bfloat16, or auto (bfloat16 on a GPU or a CPU with "
        "native bf16, AMX / AVX-512 BF16; float32 elsewhere).",
    )
    device: Device = Field(default="auto", description="auto (GPU when present), cpu or cuda.")
    gguf_group_tokens: int | None = Field(
        default=None,
        ge=16,
        le=65536,
        description="GGUF models: tokens per llama.cpp decode of several inputs; empty = 512 "
        "(measured best on CPUs).",
    )
    small_pass_runtime: Literal["auto", "onnx", "off"] = Field(
        default="auto",
        description="Short passes (one query, a few short texts) of an encoder model on a CPU "
        "run on ONNX Runtime in the server, on all cores, exported once from the served weights "
        "into <data_dir>/cache/onnx; `auto` = where onnxruntime is installed, `off` = PyTorch "
        "for every pass.",
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="Intra-op threads per forward pass; empty = the cores split between "
        "the forward threads on CPU, torch's default on GPU.",
    )
    onednn: bool = Field(
        default=True,
        description="On a CPU, run Linear layers on weights packed once for oneDNN, with an "
        "erf GELU fused into the matmul before it (same vectors, faster small batches); "
        "false runs the model's own PyTorch layers.",
    )
    model_process: bool | None = Field(
        default=None,
        description="Run the model in its own process so forward passes never wait for the "
        "event loop's GIL (restarted if it dies); false runs it on threads in the server "
        "process. Empty = true on CPU, false on GPU.",
    )
    model_restart_failures_before_exit: int | None = Field(
        default=None,
        ge=1,
        description="Failed restarts of the model process in a row after which the server "
        "exits non-zero (for its supervisor to restart it); empty = keep retrying for ever, "
        "with a backoff from 1 s doubling to 30 s.",
    )
    forward_threads: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Threads running forward passes side by side; empty = 2 on a CPU with 2+ "
        "cores, 1 on a GPU.",
    )

    # --- batching and admission control ----------------------------------------------------
    max_batch_tokens: int | None = Field(
        default=None,
        ge=64,
        description="Padded-token budget of one forward pass; empty = 4096 on CPU, 16384 on GPU.",
    )
    pad_to_multiple_of: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="A forward pass's length is its longest input rounded up to a multiple of "
        "this, so a CPU compiles a bounded set of kernel shapes (1.4-1.75x bf16 tokens/s on "
        "mixed lengths, a third of the model process's memory); 1 = exact lengths.",
    )
    max_queued_tokens: int = Field(
        default=1_048_576,
        ge=1,
        description="Queued tokens above which new requests get 429 `overloaded`.",
    )
    max_queue_seconds: float | None = Field(
        default=30.0,
        gt=0,
        description="Most model time (estimated from measured tokens/s) one API key may have "
        "queued; its next request beyond that gets 429 `overloaded` with an honest "
        "Retry-After. Keys are served in turn, so others' small requests keep flowing. "
        "Empty = no bound per key.",
    )
    batch_wait_ms: float = Field(
        default=20.0,
        ge=0,
        le=1000,
        description="Most time a batch waits for more requests to join while they keep arriving.",
    )
    tokenizer_threads: int = Field(
        default=1, ge=1, description="Threads that tokenise while the model runs a batch."
    )

    # --- request limits ----------------------------------------------------------------------
    max_inputs_per_request: int = Field(
        default=2048, ge=1, le=2048, description="Most inputs one request may carry."
    )
    max_input_tokens: int | None = Field(
        default=None, ge=2, description="Per-input token limit; empty = the model's maximum."
    )
    max_request_tokens: int = Field(
        default=1_048_576, ge=1, description="Most tokens (all inputs together) in one request."
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="Largest accepted request body, in bytes."
    )
    max_json_depth: int = Field(
        default=32, ge=4, description="Deepest JSON nesting accepted in a request body."
    )
    accept_token_ids: bool = Field(
        default=False,
        description="Accept token-id input (lists of integers). Off by default: clients such "
        "as LangChain send ids from another model's tokenizer (tiktoken), which embed as "
        "meaningless vectors; turn on only for callers that use the served model's tokenizer.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="A connection whose first request headers are not complete after this "
        "many seconds is closed (slow-header clients hold connections open otherwise).",
    )

    # --- security: identity ---------------------------------------------------------------
    auth: bool = Field(
        default=True,
        description="Require an API key or JWT on every route but /health and /ready.",
    )
    pepper: SecretStr | None = Field(
        default=None, description="Server-side pepper for key hashes (env only; prefer the file)."
    )
    pepper_file: Path | None = Field(
        default=None, description="0600 file with the pepper; default <data_dir>/pepper."
    )
    key_cache_ttl_s: float = Field(
        default=10.0, ge=0, le=300, description="How long a verified key record is cached."
    )
    jwt_algorithms: list[str] = Field(
        default_factory=list,
        description='Accepted JWT algorithms, e.g. ["RS256"]; empty = JWT off.',
    )
    jwt_issuer: str | None = Field(default=None, description="Required JWT `iss`.")
    jwt_audience: str | None = Field(default=None, description="Required JWT `aud`.")
    jwt_secret: SecretStr | None = Field(default=None, description="HS256 shared secret (env).")
    jwt_secret_file: Path | None = Field(default=None, description="0600 file with the HS secret.")
    jwt_jwks_url: str | None = Field(default=None, description="JWKS URL for RS256 / ES256 keys.")
    jwt_role_claim: str = Field(default="role", description="Claim holding the role.")
    jwt_collections_claim: str = Field(
        default="collections", description="Claim holding the granted collections (a list)."
    )
    jwt_models_claim: str = Field(
        default="models", description="Claim holding the models the caller may use (a list)."
    )
    jwt_leeway_s: float = Field(default=30, ge=0, le=60, description="Clock skew allowed.")
    jwks_ttl_s: float = Field(default=300, ge=1, description="How long JWKS keys are trusted.")
    jwks_refresh_interval_s: float = Field(
        default=30, ge=1, description="Fewest seconds between JWKS refreshes (unknown kid)."
    )

    # --- security: limits ------------------------------------------------------------------
    redis_url: SecretStr | None = Field(
        default=None, description="Redis for rate limits shared by replicas (may hold a password)."
    )
    redis_failure_mode: Literal["fail_closed", "local"] = Field(
        default="fail_closed",
        description="Redis unreachable: `fail_closed` (503) or `local` (per-process limits).",
    )
    default_rpm: int | None = Field(
        default=None, ge=1, description="Requests/min for keys without their own limit."
    )
    default_tpm: int | None = Field(
        default=None, ge=1, description="Input tokens/min for keys without their own limit."
    )
    failed_auth_per_minute: int = Field(
        default=30, ge=1, description="Failed authentications per client IP per minute."
    )

    # --- security: storage, audit, network ------------------------------------------------
    database_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL (PostgreSQL); default SQLite in the data dir."
    )
    audit: bool = Field(
        default=True,
        description="Write the audit log. Off only for measurements: admin actions are refused.",
    )
    audit_failure_mode: Literal["fail_closed", "log_only"] = Field(
        default="fail_closed",
        description="When the audit log cannot be written (a full disk): `fail_closed` "
        "answers requests 503 `audit_unavailable` until it can, `log_only` serves them and "
        "logs the failure. Admin actions are refused either way; revocation goes ahead.",
    )
    audit_path: Path | None = Field(
        default=None, description="Audit log (JSON lines); default <data_dir>/audit.jsonl."
    )
    tls_certfile: Path | None = Field(default=None, description="TLS certificate (PEM).")
    tls_keyfile: Path | None = Field(default=None, description="TLS private key (PEM, 0600).")
    trusted_proxies: list[str] = Field(
        default_factory=list, description="Proxy addresses/CIDRs whose X-Forwarded-For is used."
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS; empty = CORS off."
    )
    api_docs: Literal["admin", "off"] = Field(
        default="admin", description="`/openapi.json` for admins only, or off."
    )
    console: bool = Field(
        default=True,
        description="Serve the web console at /ui/ (static files; it shows nothing without a key).",
    )
    max_header_bytes: int = Field(
        default=16384, ge=1024, description="Largest total request header size (else 431)."
    )

    # --- knowledge base ----------------------------------------------------------------------
    milvus_uri: str | None = Field(
        default=None, description="Milvus server URI; default Milvus Lite at <data_dir>/milvus.db."
    )
    milvus_token: SecretStr | None = Field(
        default=None, description="Milvus token or user:password (env only)."
    )
    kb_dense_index: Literal["FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX"] = Field(
        default="FLAT",
        description="Milvus index for new collections' vectors (FLAT: exact).",
    )
    kb_dense_nprobe: int = Field(
        default=32, ge=1, le=65536, description="IVF indexes: clusters searched per query."
    )
    kb_dense_ef: int = Field(
        default=128,
        ge=1,
        le=32768,
        description="HNSW / AUTOINDEX: the search's candidate list (at least the hits asked).",
    )
    milvus_token_file: Path | None = Field(
        default=None, description="0600 file holding the Milvus token or user:password."
    )
    kb_chunk_tokens: int = Field(
        default=512, ge=16, le=8192, description="Default chunk size in model tokens."
    )
    kb_chunk_overlap: int = Field(
        default=61, ge=0, description="Default overlap between chunks, in tokens (~12%)."
    )
    kb_max_upload_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1024, description="Largest accepted upload, in bytes."
    )
    kb_max_pages: int = Field(default=2000, ge=1, description="Most pages accepted in one PDF.")
    kb_max_docx_uncompressed: int = Field(
        default=200 * 1024 * 1024, ge=1024, description="Most bytes a DOCX may expand to."
    )
    kb_parse_timeout_s: float = Field(
        default=120.0, gt=0, description="Time limit for parsing one document."
    )
    kb_parse_memory_mb: int = Field(
        default=2048, ge=0, description="Address-space limit of the parse worker (0: none)."
    )
    kb_max_docx_ratio: int = Field(
        default=200, ge=2, description="Most bytes a DOCX may inflate to per byte uploaded."
    )
    kb_near_duplicate_threshold: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="Chunk cosine at which documents count as near-duplicates.",
    )

    # --- startup -----------------------------------------------------------------------------
    self_test: bool = Field(
        default=True, description="Run the embedding self-test before /ready turns green."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        init_kwargs: dict[str, Any] = getattr(init_settings, "init_kwargs", {})
        toml_file = init_kwargs.get("config") or os.environ.get(f"{ENV_PREFIX}CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            path = Path(toml_file)
            if not path.is_file():
                raise FileNotFoundError(f"config file {path} does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @field_validator("jwt_algorithms")
    @classmethod
    def _pinned_algorithms(cls, value: list[str]) -> list[str]:
        allowed = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384"}
        bad = [a for a in value if a not in allowed]
        if bad:
            raise ValueError(f"unsupported JWT algorithms {bad}; choose from {sorted(allowed)}")
        return value

    @field_validator("upstreams", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """From the environment: a JSON list (of URLs or tables) or comma-separated URLs."""
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                value = json.loads(value)
            else:
                value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [_upstream_url(v) if isinstance(v, str) else v for v in value]
        return value

    def model_entries(self) -> list[ModelEntry]:
        """`models` with plain paths as tables of defaults."""
        return [m if isinstance(m, ModelEntry) else ModelEntry(path=m) for m in self.models]

    @field_validator("models", mode="before")
    @classmethod
    def _model_list(cls, value: Any) -> Any:
        """From the environment: a JSON list (of paths or tables) or comma-separated paths."""
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        levels = {"critical", "error", "warning", "info", "debug"}
        if value.lower() not in levels:
            raise ValueError(f"log_level must be one of {sorted(levels)}")
        return value.lower()


def setting_names() -> list[str]:
    """All setting names, for docs checks and `--help` texts."""
    return list(Settings.model_fields)
