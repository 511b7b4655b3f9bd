"""A model in a child process: forward passes that never wait for the server's GIL.

A PyTorch forward pass is hundreds of small Python-dispatched kernels, and it needs the GIL
between each. In the server process that GIL is also the event loop's, so under load every
kernel boundary can wait up to a switch interval for HTTP work (docs/benchmarks.md,
"Throughput", has the measurements). Here the model owns a process: the parent sends
collated ids down a socket and a reader thread hands each result to the caller waiting for it.

If the child dies (killed, out of memory, a crash in native code), the passes in flight fail
with `ModelProcessDied` and a fresh child is started; later callers wait for it instead of
failing too, and the scheduler reruns the lost inputs one at a time (`backend.PassLost`).
Starting a replacement never gives up by itself: a failed start (the OOM killer again, say) is
retried after a capped exponential backoff. Only `max_failures` failed starts in a row, when
set, give up for good, so that a supervisor can restart the whole server. A caller waits for
the new child at most `max_wait_s`, then gets `ModelUnavailable` (a 503, not a 500).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Protocol

from embedgate.engine.backend import BackendHealth, ModelUnavailable, PassLost
from embedgate.engine.backends.hf_tokenizer import IdArray
from embedgate.engine.pooling import FloatArray

log = logging.getLogger(__name__)


class ProcessModel(Protocol):
    """What a child process runs: `TorchModel`, or a fake in tests."""

    device_name: str
    dtype_name: str

    def forward(self, ids: IdArray, mask: IdArray) -> FloatArray: ...


ModelLoader = Callable[[], ProcessModel]


class ModelProcessError(RuntimeError):
    """The model process failed to load, died, or raised in a forward pass."""


class ModelProcessDied(ModelProcessError, PassLost):
    """The child died during the pass: the batch may be innocent (another pass crashed it,
    or the batch as a whole ran out of memory), so the scheduler retries its inputs alone."""


@dataclass(frozen=True)
class ModelInfo:
    device_name: str
    dtype_name: str
    pid: int


def _child_main(conn: Connection) -> None:
    """The child's whole life: load, report, then answer (id, ids, mask) until told to stop.

    The main thread reads requests; `workers` threads run forward passes side by side (their
    GIL is shared with nothing but each other) and write results back under one lock.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        sys.path[:] = conn.recv()  # first, so the loader's module can be imported
        load, threads, workers = conn.recv()
        if threads:
            import torch

            torch.set_num_threads(threads)
        model = load()
    except BaseException as exc:  # reported to the parent, which raises
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    import gc

    gc.freeze()  # the weights and modules live forever; keep them out of collections
    conn.send(("ready", model.device_name, model.dtype_name))
    work: queue.SimpleQueue[tuple[int, IdArray, IdArray] | None] = queue.SimpleQueue()
    send_lock = threading.Lock()

    def run() -> None:
        while (message := work.get()) is not None:
            request_id, ids, mask = message
            try:
                reply = (request_id, True, model.forward(ids, mask))
            except Exception as exc:  # one failed pass must not end the process
                reply = (request_id, False, f"{type(exc).__name__}: {exc}")
            with send_lock:
                conn.send(reply)

    runners = [threading.Thread(target=run, daemon=True) for _ in range(max(1, workers))]
    for runner in runners:
        runner.start()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = None  # the parent is gone
        if message is None:
            for _ in runners:
                work.put(None)
            for runner in runners:  # a pass still running when the interpreter exits aborts
                runner.join()
            return
        work.put(message)


def _child_environment() -> dict[str, str]:
    """The server's environment minus its own settings: those can hold secrets (database
    URLs, JWT keys) and the child needs none of them."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("EMBEDGATE_")}


@dataclass(frozen=True, kw_only=True)
class RestartPolicy:
    """How a dead child is replaced: retries after `first_backoff_s`, doubling up to
    `max_backoff_s`, for ever unless `max_failures` failed starts in a row give up."""

    first_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_failures: int | None = None
    max_wait_s: float = 30.0  # how long a caller waits for a replacement
    load_timeout_s: float = 900.0

    def backoff(self, failures: int) -> float:
        return float(min(self.max_backoff_s, self.first_backoff_s * 2 ** max(0, failures - 1)))


class ModelProcess:
    """The parent's handle: submit batches from any thread, restart the child if it dies."""

    def __init__(
        self,
        load: ModelLoader,
        threads: int | None,
        workers: int = 1,
        policy: RestartPolicy = RestartPolicy(),
        *,
        label: str = "",
    ) -> None:
        self._load = load
        self._label = label  # shown in the child's command line: which model `ps` sees
        self._threads = threads
        self._workers = workers
        self._policy = policy
        self._load_timeout = policy.load_timeout_s
        self._lock = threading.Condition()
        self._send_lock = threading.Lock()
        self._pending: dict[int, concurrent.futures.Future[FloatArray]] = {}
        self._ids = itertools.count()
        self._conn: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._broken: str | None = None
        self._restarting: str | None = None
        self._closing = False
        self.restarts = 0
        self.restart_failures = 0
        self._next_attempt_at = 0.0  # monotonic time of the next start attempt
        self._load_seconds = 0.0  # how long the last successful start took
        self.info: ModelInfo
        self._spawn()
        self._reader = threading.Thread(target=self._read, name="embedgate-model-reader")
        self._reader.daemon = True
        self._reader.start()

    @property
    def pid(self) -> int | None:
        return self.info.pid if self._conn is not None else None

    @property
    def unavailable(self) -> str | None:
        """Why no pass can run right now (a child is being started, or none can be), or None."""
        with self._lock:
            if self._closing:
                return "the model process is shut down"
            return self._broken or self._restarting

    @property
    def gave_up(self) -> str | None:
        with self._lock:
            return self._broken

    def health(self) -> BackendHealth:
        """The child's state, as every backend that runs one reports it."""
        return BackendHealth(
            unavailable=self.unavailable,
            gave_up=self.gave_up,
            restarts=self.restarts,
            restart_failures=self.restart_failures,
            ready_in_s=self.expected_ready_in(),
            model_pid=self.pid,
        )

    def expected_ready_in(self) -> float:
        """Seconds until a child can take a pass: the backoff left plus a typical start."""
        with self._lock:
            if self._conn is not None:
                return 0.0
            waiting = max(0.0, self._next_attempt_at - time.monotonic())
        return waiting + self._load_seconds

    def run(self, ids: IdArray, mask: IdArray) -> FloatArray:
        """One forward pass in the child; blocks this thread (not the GIL) until it returns."""
        future: concurrent.futures.Future[FloatArray] = concurrent.futures.Future()
        deadline = time.monotonic() + self._policy.max_wait_s
        with self._lock:
            while self._conn is None and self._broken is None and not self._closing:
                left = deadline - time.monotonic()  # a fresh child is loading
                if left <= 0:
                    raise ModelUnavailable(
                        self._restarting or "the model process is restarting",
                        self._retry_after_locked(),
                    )
                self._lock.wait(left)
            if self._closing:
                raise ModelProcessError("the model process is shut down")
            if self._broken is not None:
                raise ModelUnavailable(self._broken, self._policy.max_backoff_s)
            request_id = next(self._ids)
            self._pending[request_id] = future
            conn = self._conn
            assert conn is not None
        try:
            with self._send_lock:
                conn.send((request_id, ids, mask))
        except (OSError, ValueError):
            pass  # the child died; the reader fails this future with the reason
        return future.result()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._stop_child()
        self._reader.join(timeout=10)

    def _stop_child(self) -> None:
        with self._lock:
            conn, process = self._conn, self._process
        if conn is not None:
            try:
                with self._send_lock:
                    conn.send(None)
            except (OSError, ValueError):
                pass
        if process is not None:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def _retry_after_locked(self) -> float:
        return max(0.0, self._next_attempt_at - time.monotonic()) + self._load_seconds

    # --- the child's lifecycle -------------------------------------------------------------
    def _spawn(self) -> None:
        """Start a clean interpreter (not a fork: no lock or thread state is inherited, and
        not multiprocessing's spawn, which re-imports the caller's main script)."""
        ours, theirs = socket.socketpair()
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
            [
                sys.executable,
                "-m",
                "embedgate.engine.backends.torch.model_process",
                str(theirs.fileno()),
                *([self._label] if self._label else []),
            ],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env=_child_environment(),
        )
        theirs.close()
        conn = Connection(ours.detach())
        started = time.monotonic()
        try:
            conn.send(list(sys.path))
            conn.send((self._load, self._threads, self._workers))
            if not conn.poll(self._load_timeout):
                raise ModelProcessError(f"the model process did not load in {self._load_timeout}s")
            reply = conn.recv()
        except (EOFError, OSError):
            reply = ("failed", f"it exited while loading (exit code {process.wait(timeout=10)})")
        except ModelProcessError:
            process.kill()
            process.wait(timeout=10)
            conn.close()
            raise
        if reply[0] != "ready":
            process.wait(timeout=10)
            conn.close()
            raise ModelProcessError(f"the model process could not load the model: {reply[1]}")
        self._load_seconds = time.monotonic() - started
        log.info(
            "model process ready",
            extra={"pid": process.pid, "load_seconds": round(self._load_seconds, 2)},
        )
        with self._lock:
            self._conn, self._process = conn, process
            self._restarting = None
            self.info = ModelInfo(device_name=reply[1], dtype_name=reply[2], pid=process.pid)
            self._lock.notify_all()

    def _read(self) -> None:
        while True:
            conn = self._conn
            assert conn is not None
            try:
                request_id, ok, payload = conn.recv()
            except (EOFError, OSError):
                if not self._child_died():
                    return
                continue
            with self._lock:
                future = self._pending.pop(request_id, None)
            if future is None:
                continue
            if ok:
                future.set_result(payload)
            else:
                future.set_exception(ModelProcessError(payload))

    def _child_died(self) -> bool:
        """Fail what was in flight and start a fresh child; False when the reader should end."""
        process = self._process
        assert process is not None
        try:
            exit_code: int | None = process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # the pipe broke but it lives on: end it
            process.kill()
            exit_code = process.wait(timeout=10)
        reason = f"the model process exited (exit code {exit_code})"
        with self._lock:
            old, self._conn = self._conn, None
            pending, self._pending = self._pending, {}
            closing = self._closing
            self._restarting = f"{reason}; a new one is loading"
        with self._send_lock:  # no sender may be writing to it while its fd is released
            if old is not None:
                old.close()
        for future in pending.values():
            future.set_exception(ModelProcessDied(reason))
        if closing:
            return False
        log.error("%s; starting a new one", reason, extra={"failed_batches": len(pending)})
        return self._restart(reason)

    def _restart(self, reason: str) -> bool:
        """Start a replacement, retrying with backoff until one loads, the process is closed,
        or `max_failures` starts in a row failed. True when a new child is serving."""
        failures = 0
        while True:
            try:
                self._spawn()
            except ModelProcessError as exc:
                failures += 1
                self.restart_failures += 1
                wait = self._policy.backoff(failures)
                limit = self._policy.max_failures
                with self._lock:
                    if limit is not None and failures >= limit:
                        self._broken = (
                            f"{reason}; {failures} restarts in a row failed, giving up "
                            f"(model_restart_failures_before_exit = {limit}); last: {exc}"
                        )
                        self._restarting = None
                        self._lock.notify_all()
                        log.critical("%s", self._broken)
                        return False
                    self._next_attempt_at = time.monotonic() + wait
                    self._restarting = (
                        f"{reason}; restart {failures} failed ({exc}), next try in {wait:g} s"
                    )
                    log.error(
                        "model process restart failed; retrying",
                        extra={"attempt": failures, "reason": str(exc), "retry_in_s": wait},
                    )
                    if self._lock.wait_for(lambda: self._closing, timeout=wait):
                        return False
                continue
            self.restarts += 1
            if self._closing:  # close() ran while the new child loaded: it never saw this one
                self._stop_child()
                return False
            return True


if __name__ == "__main__":
    _child_main(Connection(int(sys.argv[1])))
