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
    gateway or the GGUF backend (a step towards gateway and GGUF servers without torch;
    transformers' AutoTokenizer still pulls it in at model load)."""
    code = (
        "import sys; import embedgate.app, embedgate.engine.gateway_backend, "
        "embedgate.engine.gguf_backend; print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
