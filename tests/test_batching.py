"""Batch planning properties: every item planned once, budgets respected, oldest first."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from embedgate.engine.batching import (
    SPLIT_SAVES_TOKENS,
    PendingRequest,
    WorkItem,
    padded_length,
    plan_micro_batches,
)
from embedgate.engine.fair_queue import FairQueue


def items(lengths: list[int]) -> list[WorkItem]:
    request = PendingRequest(len(lengths), 4)
    return [WorkItem([1] * n, request, i) for i, n in enumerate(lengths)]


@given(st.lists(st.integers(1, 600), min_size=1, max_size=200), st.integers(64, 4096))
def test_micro_batches_cover_everything_within_budget(lengths: list[int], budget: int) -> None:
    work = items(lengths)
    batches = plan_micro_batches(work, budget)
    planned = [item for batch in batches for item in batch]
    assert sorted(id(i) for i in planned) == sorted(id(i) for i in work)
    for batch in batches:
        padded = len(batch) * max(item.tokens for item in batch)
        assert padded <= budget or len(batch) == 1
        assert [i.tokens for i in batch] == sorted(i.tokens for i in batch)


@given(
    st.lists(st.integers(1, 600), min_size=1, max_size=200),
    st.integers(64, 4096),
    st.sampled_from([1, 8, 16, 64]),
)
def test_budget_counts_the_padded_length(lengths: list[int], budget: int, multiple: int) -> None:
    batches = plan_micro_batches(items(lengths), budget, lambda n: padded_length(n, multiple))
    assert sum(len(b) for b in batches) == len(lengths)
    for batch in batches:
        length = padded_length(max(item.tokens for item in batch), multiple)
        assert length % multiple == 0 and length - multiple < batch[-1].tokens <= length
        assert len(batch) * length <= budget or len(batch) == 1


@given(
    st.lists(st.integers(1, 600), min_size=1, max_size=200),
    st.integers(64, 4096),
    st.sampled_from([1, 16]),
)
def test_cuts_only_for_the_budget_or_enough_padding(
    lengths: list[int], budget: int, multiple: int
) -> None:
    batches = plan_micro_batches(items(lengths), budget, lambda n: padded_length(n, multiple))
    for before, after in pairwise(batches):
        was = padded_length(before[-1].tokens, multiple)
        now = padded_length(after[0].tokens, multiple)
        over_budget = (len(before) + 1) * now > budget
        assert over_budget or len(before) * (now - was) >= SPLIT_SAVES_TOKENS


def test_a_length_boundary_splits_a_batch_when_it_saves_enough() -> None:
    def shapes(lengths: list[int]) -> list[tuple[int, int]]:
        batches = plan_micro_batches(items(lengths), 4096, lambda n: padded_length(n, 16))
        return [(len(b), padded_length(b[-1].tokens, 16)) for b in batches]

    # 20 rows of 47 would pad to 64 with the 50s: 20 x 16 wasted tokens, worth a pass
    assert shapes([47] * 20 + [50] * 20) == [(20, 48), (20, 64)]
    # 4 rows would waste 64 tokens, less than a pass costs
    assert shapes([47] * 4 + [50] * 20) == [(24, 64)]


def test_padded_length_rounds_up_to_the_multiple() -> None:
    assert [padded_length(n, 16) for n in (1, 15, 16, 17, 50, 512)] == [16, 16, 16, 32, 64, 512]
    assert [padded_length(n, 1) for n in (1, 17, 50)] == [1, 17, 50]


@given(st.lists(st.integers(1, 600), min_size=1, max_size=200), st.integers(64, 4096))
def test_one_callers_window_is_oldest_first_and_always_progresses(
    lengths: list[int], budget: int
) -> None:
    queue = FairQueue(quantum=max(64, budget // 8))
    queued = items(lengths)
    queue.extend("a", queued)
    window = queue.take(budget)
    assert window == queued[: len(window)]  # in order, nothing skipped
    assert sum(i.tokens for i in window) <= budget or len(window) == 1
    assert len(window) + len(queue) == len(lengths)
    assert queue.tokens_of("a") == sum(lengths) - sum(i.tokens for i in window)


def test_similar_lengths_share_a_batch() -> None:
    batches = plan_micro_batches(items([500, 10, 490, 12, 11, 505]), 1600)
    assert [[i.tokens for i in b] for b in batches] == [[10, 11, 12], [490, 500, 505]]
