"""The queue in front of the model, fair across callers: deficit round robin over tokens.

One caller's 2,048 long inputs used to sit ahead of every other caller's single sentence in
one FIFO, and small requests waited minutes behind a batch they had nothing to do with. Here
each caller (an API key, an ingest job's collection) has its own FIFO, and a forward window
is filled by visiting the callers in turn, each allowed `quantum` more tokens per visit
(deficit round robin, Shreedhar and Varghese 1995): a caller with one short input gets it into
the very next window, however much another caller has queued, and a lone caller still gets
whole windows. Within a caller, order is kept (oldest first).
"""

from __future__ import annotations

from collections import OrderedDict, deque

from embedgate.engine.batching import WorkItem

DEFAULT_CALLER = "-"


class FairQueue:
    def __init__(self, quantum: int) -> None:
        self._quantum = max(1, quantum)
        self._queues: OrderedDict[str, deque[WorkItem]] = OrderedDict()  # visit order
        self._deficit: dict[str, int] = {}
        self._tokens: dict[str, int] = {}
        self._items = 0

    def __len__(self) -> int:
        return self._items

    def tokens_of(self, caller: str) -> int:
        """Tokens this caller has queued."""
        return self._tokens.get(caller, 0)

    def extend(self, caller: str, items: list[WorkItem]) -> None:
        if not items:
            return
        if caller not in self._queues:
            self._queues[caller] = deque()
            self._deficit[caller] = 0
            self._tokens[caller] = 0
        self._queues[caller].extend(items)
        self._tokens[caller] += sum(item.tokens for item in items)
        self._items += len(items)

    def take(self, budget: int) -> list[WorkItem]:
        """Up to `budget` real tokens (always at least one item when any is queued), the
        callers visited in turn, round after round while any caller's next item still fits.
        A caller visited keeps its place at the back; one not reached leads the next window."""
        window: list[WorkItem] = []
        used = 0
        while self._fits(budget - used) or (not window and self._queues):
            for caller in list(self._queues):
                queue = self._queues[caller]
                self._deficit[caller] += self._quantum
                while queue and (
                    not window
                    or (
                        queue[0].tokens <= self._deficit[caller]
                        and used + queue[0].tokens <= budget
                    )
                ):
                    item = queue.popleft()
                    window.append(item)
                    used += item.tokens
                    self._deficit[caller] = max(0, self._deficit[caller] - item.tokens)
                    self._tokens[caller] -= item.tokens
                    self._items -= 1
                if queue:
                    self._queues.move_to_end(caller)
                else:  # an emptied queue leaves the round and keeps no credit
                    del self._queues[caller], self._deficit[caller], self._tokens[caller]
                if used >= budget:
                    return window
        return window

    def _fits(self, room: int) -> bool:
        return any(queue[0].tokens <= room for queue in self._queues.values())

    def drain(self) -> list[WorkItem]:
        """Everything queued, emptied (for shutdown)."""
        items = [item for queue in self._queues.values() for item in queue]
        self._queues.clear()
        self._deficit.clear()
        self._tokens.clear()
        self._items = 0
        return items
