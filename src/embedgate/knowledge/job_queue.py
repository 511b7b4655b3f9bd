"""Which ingest job works next: collections take turns, and any job can be called off.

The ingest loop runs a job as a series of steps (parse, then one embedding batch at a time).
`FairJobs` hands out steps round-robin over collections, so a 2,000-page upload to one
collection costs another collection's one-page upload at most one batch of waiting, not the
whole big job. Within a collection, jobs run in the order they came.

`Cancellation` is the job's own stop signal, set when its document, its collection or the job
itself is deleted, or when the runner stops; the engine drops the job's queued inputs when it
is set, and the loop checks it between steps.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal


class Cancellation:
    """A `CancelSignal` for one job: set by a delete, or by the runner stopping."""

    __slots__ = ("_own", "_runner")

    def __init__(self, runner: threading.Event) -> None:
        self._own = threading.Event()
        self._runner = runner

    def set(self) -> None:
        self._own.set()

    def is_set(self) -> bool:
        return self._own.is_set() or self._runner.is_set()

    @property
    def cancelled(self) -> bool:
        """Called off by a delete (not merely stopping with the runner)."""
        return self._own.is_set()


@dataclass(eq=False)
class ActiveJob:
    """A job whose steps are under way: `steps` yields between units of work and returns
    the job's result."""

    job_id: str
    document_id: str
    collection: str
    cancel: Cancellation
    steps: Generator[None, None, Any] | None = None


class FairJobs:
    """Queued and running jobs, by collection; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._by_collection: OrderedDict[str, deque[ActiveJob]] = OrderedDict()
        self._jobs: dict[str, ActiveJob] = {}

    def add(self, job: ActiveJob) -> None:
        with self._lock:
            self._jobs[job.job_id] = job
            self._by_collection.setdefault(job.collection, deque()).append(job)
            self._lock.notify_all()

    def next_turn(self, timeout: float) -> ActiveJob | None:
        """The head job of the collection whose turn it is (that collection then moves to
        the back of the line); None after `timeout` with nothing to do."""
        with self._lock:
            if not self._by_collection and not self._lock.wait(timeout):
                return None
            if not self._by_collection:
                return None
            collection, line = next(iter(self._by_collection.items()))
            self._by_collection.move_to_end(collection)
            return line[0]

    def finish(self, job: ActiveJob) -> None:
        with self._lock:
            self._jobs.pop(job.job_id, None)
            line = self._by_collection.get(job.collection)
            if line is not None:
                if job in line:
                    line.remove(job)
                if not line:
                    del self._by_collection[job.collection]

    def cancel(
        self,
        *,
        job_id: str | None = None,
        document_id: str | None = None,
        collection: str | None = None,
    ) -> int:
        """Call off the matching jobs; returns how many were found."""
        with self._lock:
            found = [
                j
                for j in self._jobs.values()
                if j.job_id == job_id or j.document_id == document_id or j.collection == collection
            ]
        for job in found:
            job.cancel.set()
        return len(found)

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def wake(self) -> None:
        with self._lock:
            self._lock.notify_all()


@dataclass
class JobOutcomes:
    """How ingest jobs ended since start, for the metrics (a job ends in one of the three);
    counted from the runner's threads."""

    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def count(self, outcome: Literal["succeeded", "failed", "cancelled"]) -> None:
        with self._lock:
            setattr(self, outcome, getattr(self, outcome) + 1)

    def as_dict(self) -> dict[str, int]:
        return {"succeeded": self.succeeded, "failed": self.failed, "cancelled": self.cancelled}
