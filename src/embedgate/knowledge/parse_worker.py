"""Parsing in a separate process with a wall-clock limit.

A PDF that makes a parser spin, or a file that crashes a C library, costs one worker process,
which is killed at the deadline; the server and every other job carry on. Workers come from a
`forkserver` (never `fork` of the threaded server) with the parsers preloaded, so each start is
cheap.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from typing import Any

from embedgate.errors import ErrorKind, ServiceError
from embedgate.knowledge.parsers import ParsedDocument, ParseLimits, parse_bytes

_CONTEXT: Any = None


def _context() -> Any:
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["embedgate.knowledge.parsers"])
        _CONTEXT = ctx
    return _CONTEXT


def _child(conn: Connection, filename: str, data: bytes, limits: ParseLimits) -> None:
    try:
        document = parse_bytes(filename, data, limits)
        conn.send(("ok", document.pages))
    except ServiceError as exc:
        conn.send(("error", (exc.kind.value, exc.message)))
    except Exception as exc:
        conn.send(
            (
                "error",
                (
                    ErrorKind.INVALID_REQUEST.value,
                    f"the file could not be parsed: {type(exc).__name__}",
                ),
            )
        )
    finally:
        conn.close()


def parse_with_limit(
    filename: str, data: bytes, limits: ParseLimits, timeout_s: float
) -> ParsedDocument:
    """Parse in a child process; raise ServiceError on a bad file or when time runs out."""
    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(sender, filename, data, limits), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            raise ServiceError(
                ErrorKind.PARSE_TIMEOUT,
                f"parsing took longer than {timeout_s:g} s and was stopped; the file may be "
                "malformed or hostile",
                "file",
            )
        status, payload = receiver.recv()
    except EOFError:
        raise ServiceError(
            ErrorKind.INVALID_REQUEST, "the parser crashed on this file", "file"
        ) from None
    finally:
        if process.is_alive():
            process.kill()
        process.join(timeout=5)
        receiver.close()
    if status == "ok":
        return ParsedDocument([(int(n), str(t)) for n, t in payload])
    kind, message = payload
    raise ServiceError(ErrorKind(kind), message, "file")
