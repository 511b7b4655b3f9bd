"""Parsing in a separate process with a wall-clock and a memory limit.

A PDF that makes a parser spin, a zip bomb, or a file that crashes a C library costs one
worker process, which is killed at the deadline (or runs out of its address space,
RLIMIT_AS) and is replaced; the server and every other job carry on, and the server's own
memory never sees the file's contents inflated. The worker is long-lived (starting a process
per document costs more than parsing most documents) and comes from a `forkserver`, never a
`fork` of the threaded server. Its owner (the ingest runner) closes it, so a stopped server
leaves no process behind. A job that is called off kills the worker mid-parse.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Protocol

from embedgate.errors import ErrorKind, ServiceError
from embedgate.knowledge.parsers import ParsedDocument, ParseLimits, parse_bytes

DEFAULT_MEMORY_BYTES = 2 * 1024**3


class CancelSignal(Protocol):
    def is_set(self) -> bool: ...


class ParseCancelled(Exception):
    """The caller called the parse off (the job was deleted or the server is stopping)."""


def _limit_memory(limit: int) -> None:
    import resource

    if limit > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _serve(conn: Connection, memory_limit: int) -> None:
    """The worker's loop: one (filename, data, limits) in, one result out, until EOF."""
    _limit_memory(memory_limit)
    while True:
        try:
            filename, data, limits = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", parse_bytes(filename, data, limits).pages))
        except ServiceError as exc:
            conn.send(("error", (exc.kind.value, exc.message)))
        except MemoryError:
            message = "parsing the file needed more memory than the parser may use"
            conn.send(("error", (ErrorKind.REQUEST_TOO_LARGE.value, message)))
        except Exception as exc:
            message = f"the file could not be parsed ({type(exc).__name__})"
            conn.send(("error", (ErrorKind.INVALID_REQUEST.value, message)))


class ParseWorker:
    """One worker process, replaced whenever it is killed for time or dies."""

    def __init__(self, memory_limit: int = DEFAULT_MEMORY_BYTES) -> None:
        self.memory_limit = memory_limit
        self._ctx: Any = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["embedgate.knowledge.parsers"])
        self._process: Any = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> Connection:
        if self._process is None or not self._process.is_alive() or self._conn is None:
            self._discard()
            parent, child = self._ctx.Pipe(duplex=True)
            self._process = self._ctx.Process(
                target=_serve, args=(child, self.memory_limit), daemon=True
            )
            self._process.start()
            child.close()
            self._conn = parent
        return self._conn

    def _discard(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()
        if self._process is not None:
            self._process.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._process, self._conn = None, None

    def parse(
        self,
        filename: str,
        data: bytes,
        limits: ParseLimits,
        timeout_s: float,
        cancel: CancelSignal | None = None,
    ) -> ParsedDocument:
        """Parse in the worker; raise ServiceError on a bad file or when time runs out,
        ParseCancelled when `cancel` is set first."""
        with self._lock:
            conn = self._ensure()
            try:
                conn.send((filename, data, limits))
                deadline = time.monotonic() + timeout_s
                while not conn.poll(max(0.0, min(0.1, deadline - time.monotonic()))):
                    if cancel is not None and cancel.is_set():
                        self._discard()
                        raise ParseCancelled
                    if time.monotonic() >= deadline:
                        self._discard()
                        raise ServiceError(
                            ErrorKind.PARSE_TIMEOUT,
                            f"parsing took longer than {timeout_s:g} s and was stopped; the "
                            "file may be malformed or hostile",
                            "file",
                        )
                status, payload = conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                self._discard()
                if cancel is not None and cancel.is_set():
                    raise ParseCancelled from None
                raise ServiceError(
                    ErrorKind.INVALID_REQUEST, "the parser crashed on this file", "file"
                ) from None
        if status == "ok":
            return ParsedDocument([(int(n), str(t)) for n, t in payload])
        kind, message = payload
        raise ServiceError(ErrorKind(kind), message, "file")

    def close(self) -> None:
        """Kill the worker. The `forkserver` stays: multiprocessing owns it, one per process,
        and ends it at exit; it holds no file or socket of ours. Safe while a parse runs in
        another thread: killing the process ends that parse at once."""
        process = self._process
        if process is not None and process.is_alive():
            process.kill()
        with self._lock:
            self._discard()


def parse_with_limit(
    filename: str, data: bytes, limits: ParseLimits, timeout_s: float
) -> ParsedDocument:
    """Parse once on a worker of its own (tools and tests; the server keeps one worker)."""
    worker = ParseWorker()
    try:
        return worker.parse(filename, data, limits, timeout_s)
    finally:
        worker.close()
