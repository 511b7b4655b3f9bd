"""Settings as data: every setting documented, and env / TOML / arguments layered correctly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from embedgate.config import Settings, setting_names

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text()
    documented = set(re.findall(r"`EMBEDGATE_([A-Z_]+)`", text))
    names = {name.upper() for name in setting_names()}
    assert names - documented == set(), "undocumented settings"
    assert documented - names == set(), "docs mention settings that do not exist"
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"


def test_layering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "embedgate.toml"
    toml.write_text('port = 9001\nmax_batch_tokens = 4096\ndtype = "bfloat16"\n')
    monkeypatch.setenv("EMBEDGATE_PORT", "9002")
    s = Settings(config=toml)
    assert (s.port, s.max_batch_tokens, s.dtype) == (9002, 4096, "bfloat16")
    assert Settings(config=toml, port=9003).port == 9003
    monkeypatch.setenv("EMBEDGATE_CONFIG", str(toml))
    assert Settings().max_batch_tokens == 4096


def test_defaults_are_safe() -> None:
    s = Settings()
    assert s.host == "127.0.0.1" and s.max_inputs_per_request == 2048


def test_unknown_settings_are_refused(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("prot = 1\n")
    with pytest.raises(ValueError, match="prot"):
        Settings(config=toml)


def test_deployment_files_name_only_real_settings() -> None:
    """deploy/ (compose, systemd, nginx) and the Dockerfile: a misspelt EMBEDGATE_ name
    would be ignored silently by the server."""
    root = DOCS.parents[1]
    files = [root / "Dockerfile", *sorted(p for p in (root / "deploy").rglob("*") if p.is_file())]
    names = {name.upper() for name in setting_names()}
    used = {
        (path.name, found)
        for path in files
        for found in re.findall(r"EMBEDGATE_([A-Z0-9_]+)", path.read_text())
    }
    assert used, "no settings found in deploy/"
    assert {(f, n) for f, n in used if n not in names} == set()


def test_upstreams_from_the_environment_and_toml_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedgate.services.engine import upstream_configs

    monkeypatch.setenv("EMBEDGATE_UPSTREAMS", "http://gpu-1:8000, http://gpu-2:8000")
    assert Settings().upstreams == ["http://gpu-1:8000", "http://gpu-2:8000"]
    key = tmp_path / "engine.key"
    key.write_text("sk-engine\n")
    key.chmod(0o600)
    toml = tmp_path / "embedgate.toml"
    toml.write_text(
        "upstream_max_batch = 32\n"
        f'upstream_api_key_file = "{key}"\n'
        '[[upstreams]]\nurl = "http://gpu-1:8000"\nweight = 3\nmax_batch = 128\n'
        '[[upstreams]]\nurl = "http://gpu-2:8000"\napi_key_env = "GPU2_KEY"\n'
    )
    monkeypatch.delenv("EMBEDGATE_UPSTREAMS")
    monkeypatch.setenv("GPU2_KEY", "sk-other")
    first, second = upstream_configs(Settings(config=toml))
    assert (first.url, first.weight, first.max_batch, first.api_key) == (
        "http://gpu-1:8000",
        3.0,
        128,
        "sk-engine",
    )
    assert (second.weight, second.max_batch, second.api_key) == (1.0, 32, "sk-other")
    assert "sk-" not in repr(first)  # the key never shows in logs or errors


def test_engine_config_carries_every_engine_setting() -> None:
    """Each `EngineConfig` field is the `Settings` field of the same name, so a setting added
    to one and forgotten in the other cannot silently run at the engine's default."""
    import dataclasses

    from embedgate.services.engine import engine_config

    settings = Settings(
        model_aliases=["a", "b"],
        dtype="bfloat16",
        forward_threads=3,
        batch_wait_ms=7.5,
        max_queued_tokens=12345,
        upstream_deadline_s=9.0,
        gguf_group_tokens=256,
    )
    config = engine_config(settings)
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if item.name == "upstreams":
            assert value == ()
        elif item.name == "task":  # the first model's task is read from its directory
            assert value is None
        elif item.name == "model_aliases":
            assert value == ("a", "b")
        elif item.name == "cache_dir":  # exported graphs live in the data dir
            assert value == str(settings.data_dir / "cache")
        else:
            assert value == getattr(settings, item.name), item.name
    assert (config.dtype, config.forward_threads, config.max_queued_tokens) == (
        "bfloat16",
        3,
        12345,
    )


def test_more_models_from_tables_and_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """`[[models]]` tables and plain paths (a repeated --model, EMBEDGATE_MODELS) become
    engine configs over the server's settings: their own name, task, dtype, aliases and
    limits; a plain path's task is read from the directory (embed when it is no reranker)."""
    from embedgate.config import ModelEntry
    from embedgate.services.engine import extra_model_configs

    settings = Settings(
        dtype="bfloat16",
        forward_threads=3,
        models=[
            "/models/ms-marco",
            ModelEntry(
                path="/models/q",
                name="q",
                task="rerank",
                dtype="float32",
                aliases=["r"],
                max_queued_tokens=500,
                max_input_tokens=256,
            ),
        ],
    )
    plain, table = extra_model_configs(settings)
    assert (plain.model, plain.model_name, plain.task, plain.dtype) == (
        "/models/ms-marco",
        None,
        "embed",
        "bfloat16",
    )
    assert plain.max_queued_tokens == settings.max_queued_tokens
    assert (table.max_queued_tokens, table.max_input_tokens) == (500, 256)
    assert (table.model, table.model_name, table.task, table.dtype) == (
        "/models/q",
        "q",
        "rerank",
        "float32",
    )
    assert table.model_aliases == ("r",) and table.forward_threads == 3
    monkeypatch.setenv("EMBEDGATE_MODELS", "/a, /b")
    assert Settings().models == ["/a", "/b"]
    monkeypatch.setenv("EMBEDGATE_MODELS", '[{"path": "/c", "task": "rerank"}]')
    assert Settings().models == [ModelEntry(path="/c", task="rerank")]
    with pytest.raises(ValueError, match="task"):
        Settings(models=[{"path": "/d", "task": "classify"}])
