"""Rules of the house that a linter does not know: no import cycles inside embedgate, HTTP
headers written only by the API layer, and test helpers imported from tests/support."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "embedgate"
sys.path.insert(0, str(ROOT / "scripts"))
import import_cycles  # noqa: E402  (scripts/import_cycles.py, also run by `make lint`)


def test_no_module_imports_itself_through_others() -> None:
    assert import_cycles.cycles() == []


def test_only_the_api_layer_writes_http_headers() -> None:
    """Errors carry `retry_after_s` and the limit windows; api/errors.py turns them into
    Retry-After, retry-after-ms, x-ratelimit-* and WWW-Authenticate. (The gateway's client
    reading an upstream's Retry-After is not writing one.)"""
    written = re.compile(
        r"""["'](Retry-After|retry-after-ms|WWW-Authenticate)["']\s*:|["']x-ratelimit-"""
    )
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.relative_to(SRC).parts[0] not in ("api", "web") and written.search(path.read_text())
    ]
    assert offenders == []
    assert written.search((SRC / "api" / "errors.py").read_text())  # the check can find them


def test_tests_take_helpers_from_support_not_conftest() -> None:
    importers = [
        path.name
        for path in (ROOT / "tests").rglob("*.py")
        if re.search(r"^\s*from conftest import", path.read_text(), re.M)
    ]
    assert importers == []


def test_importing_the_app_and_the_non_torch_backends_loads_no_torch() -> None:
    """torch is imported where a torch model is loaded, not by importing the app, the
    gateway or the GGUF backend, nor by loading a tokenizer (tests/test_gateway.py checks a
    running gateway's memory map)."""
    code = (
        "import sys; import embedgate.app, embedgate.engine.backends.gateway.backend, "
        "embedgate.engine.backends.gguf.backend; "
        "from embedgate.engine.backend import TextOptions; "
        "from embedgate.engine.backends.hf_tokenizer import HFTokenizer; "
        "from embedgate.engine.loading import bundled_model_dir; "
        "HFTokenizer.load(bundled_model_dir(), TextOptions()); "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False False"


def _core_contract() -> list[str]:
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [core] = [c for c in contracts["contracts"] if c["name"].startswith("The engine core")]
    assert core["forbidden_modules"] == ["embedgate.engine.backends"]
    return list(core["source_modules"])


def test_the_backend_contract_names_every_core_module() -> None:
    """A module added to engine/ is core (it may not import a backend) unless it is one of
    the places that choose a backend; the import-linter contract must list it."""
    choosers = {"__init__", "factory", "inspection"}
    modules = {path.stem for path in (SRC / "engine").glob("*.py")} - choosers
    assert {f"embedgate.engine.{name}" for name in modules} == set(_core_contract())


def test_nothing_outside_the_engine_reaches_into_its_backend() -> None:
    """Callers use the engine's own methods (describe, health, count_tokens, template);
    what a backend is stays inside engine/."""
    reach = re.compile(r"\bengine\.backend\b|\.backend\.")
    offenders = [
        f"{path.relative_to(SRC)}:{number}"
        for path in SRC.rglob("*.py")
        if path.relative_to(SRC).parts[0] != "engine"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if reach.search(line) and not line.lstrip().startswith(("from ", "import "))
    ]
    assert offenders == []


def test_one_free_port_helper() -> None:
    defined = [
        path.name
        for path in list((ROOT / "tests").rglob("*.py")) + list((ROOT / "benchmarks").glob("*.py"))
        if re.search(r"^def free_port\(", path.read_text(), re.M)
    ]
    assert defined == ["services.py"]
