"""Serving the console's files: one build id, long caching, strict security headers.

The files are read once when the app is built (never at import). Their combined SHA-256 is the
build id in every asset URL (`/ui/assets/<build>/js/app.js`), so an asset can be cached for a
year: a new version has new URLs. Relative ES-module imports resolve under the same id. The
page itself (`/ui/`) is never cached, so it always names the current build.

`/ui/` is public like a login page: it holds no data, and everything it shows comes from
the API with the user's key. The headers forbid inline scripts, plugins, framing and foreign
origins, so even a rendering bug cannot run text from a document as code.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
IMMUTABLE = "public, max-age=31536000, immutable"
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


@dataclass(frozen=True)
class ConsoleFiles:
    build: str
    files: dict[str, bytes]  # path under static/ -> content

    @classmethod
    def load(cls, root: Path | None = None) -> ConsoleFiles:
        base = root or Path(str(resources.files("embedgate.web") / "static"))
        files = {
            p.relative_to(base).as_posix(): p.read_bytes()
            for p in sorted(base.rglob("*"))
            if p.is_file()
        }
        digest = hashlib.sha256()
        for name, content in files.items():
            digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
        return cls(digest.hexdigest()[:16], files)

    def page(self) -> bytes:
        return self.files["index.html"].replace(b"{{build}}", self.build.encode())


def _headers(cache: str, media_type: str) -> dict[str, str]:
    return {**SECURITY_HEADERS, "Cache-Control": cache, "Content-Type": media_type}


def console_routes(prefix: str, files: ConsoleFiles | None = None) -> list[Route]:
    """The console's routes under `prefix` (e.g. "/ui"). Each endpoint is marked `public`:
    the server's deny-by-default check lets these through and still walks every other route."""
    console = files or ConsoleFiles.load()
    page = console.page()

    async def index(_: Request) -> Response:
        return Response(page, headers=_headers("no-cache", "text/html; charset=utf-8"))

    async def bare(_: Request) -> Response:
        return RedirectResponse(f"{prefix}/", status_code=308)

    async def asset(request: Request) -> Response:
        build, path = request.path_params["build"], request.path_params["path"]
        content = console.files.get(path)
        if build != console.build or content is None or path == "index.html":
            missing = _headers("no-cache", "text/plain")
            return Response(b"not found", status_code=404, headers=missing)
        suffix = Path(path).suffix
        media = TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"
        if media.startswith("text/"):
            media += "; charset=utf-8"
        return Response(content, headers=_headers(IMMUTABLE, media))

    for endpoint in (index, bare, asset):
        endpoint.public = True  # type: ignore[union-attr]
    return [
        Route(f"{prefix}/", index, methods=["GET", "HEAD"], name="console"),
        Route(prefix, bare, methods=["GET", "HEAD"]),
        Route(f"{prefix}/assets/{{build}}/{{path:path}}", asset, methods=["GET", "HEAD"]),
    ]
