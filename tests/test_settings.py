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
