"""Other projects' client code, run as they ship it against our server.

Open WebUI's external reranker (`open_webui/retrieval/models/external.py`) is taken from
the pinned wheel `make install-test` downloads into .venv/clients; its two imports of the
application's configuration are replaced by the defaults (no user headers forwarded, TLS
verified) and it runs in a subprocess, so nothing of it stays in the test process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

CLIENTS = Path(__file__).resolve().parents[2] / ".venv" / "clients"

_OPEN_WEBUI_STUBS = {
    "open_webui/__init__.py": "",
    "open_webui/env.py": "ENABLE_FORWARD_USER_INFO_HEADERS = False\nREQUESTS_VERIFY = True\n",
    "open_webui/utils/__init__.py": "",
    "open_webui/utils/headers.py": "def include_user_info_headers(headers, user):\n"
    "    return headers\n",
    "open_webui/retrieval/__init__.py": "",
    "open_webui/retrieval/models/__init__.py": "",
}
_OPEN_WEBUI_CODE = ("base_reranker.py", "external.py")

_CALL = """
import json, sys
from open_webui.retrieval.models.external import ExternalReranker
url, key, model, pairs = json.loads(sys.stdin.read())
scores = ExternalReranker(api_key=key, url=url, model=model, timeout=60).predict(
    [tuple(p) for p in pairs]
)
print(json.dumps(scores))
"""


def open_webui_wheel() -> Path:
    wheels = sorted(CLIENTS.glob("open_webui-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"no Open WebUI wheel in {CLIENTS}: run `make install-test`")
    return wheels[-1]


def open_webui_rerank(
    url: str, key: str, model: str, pairs: Sequence[tuple[str, str]]
) -> list[float] | None:
    """`ExternalReranker(...).predict(pairs)` as Open WebUI calls it: scores in the
    documents' order, or None where Open WebUI would log an error and fall back."""
    with tempfile.TemporaryDirectory(prefix="open-webui-") as root:
        base = Path(root)
        for name, text in _OPEN_WEBUI_STUBS.items():
            (base / name).parent.mkdir(parents=True, exist_ok=True)
            (base / name).write_text(text)
        with zipfile.ZipFile(open_webui_wheel()) as wheel:
            for name in _OPEN_WEBUI_CODE:
                source = wheel.read(f"open_webui/retrieval/models/{name}")
                (base / "open_webui/retrieval/models" / name).write_bytes(source)
        done = subprocess.run(
            [sys.executable, "-c", _CALL],
            input=json.dumps([url, key, model, [list(p) for p in pairs]]),
            capture_output=True,
            text=True,
            cwd=root,
            timeout=120,
            env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"},
        )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    result = json.loads(done.stdout)
    return None if result is None else [float(s) for s in result]
