"""The gateway's upstream pool against real HTTP servers that misbehave on purpose."""

from __future__ import annotations

import time

import numpy as np
import pytest

from embedgate.engine.backends.gateway.upstream import UpstreamPool
from embedgate.engine.config import UpstreamConfig
from embedgate.errors import ErrorKind, ServiceError
from support.fake_upstream import Behaviour, fake_upstream, resetting_upstream, vector_for

TEXTS = [f"text number {i}" for i in range(10)]


def expected(texts: list[str]) -> np.ndarray:
    return np.stack([vector_for(t, 32) for t in texts])


async def admitted(*urls: str, max_batch: int = 4) -> UpstreamPool:
    pool = UpstreamPool([UpstreamConfig(url, "m", max_batch=max_batch) for url in urls])
    await pool.probe_due()
    return pool


@pytest.mark.anyio
async def test_batches_are_split_spread_and_put_back_in_order() -> None:
    a, b = Behaviour(), Behaviour()

    with fake_upstream(a) as ua, fake_upstream(b) as ub:
        pool = await admitted(ua, ub)
        try:
            vectors = await pool.embed(TEXTS)
        finally:
            await pool.aclose()
    assert np.array_equal(vectors, expected(TEXTS))  # base64 float32: bit-identical
    sent = [t for call in a.inputs[1:] + b.inputs[1:] for t in call]  # after each probe
    assert sorted(sent) == sorted(TEXTS) and max(len(c) for c in a.inputs + b.inputs) <= 4
    assert a.calls > 1 and b.calls > 1  # both upstreams took batches


@pytest.mark.parametrize("mode", ["500", "429", "dims", "nan", "slow"])
@pytest.mark.anyio
async def test_a_failing_upstream_is_ejected_and_its_batches_retried(mode: str) -> None:
    bad, good = Behaviour(), Behaviour()

    with fake_upstream(bad) as ub, fake_upstream(good) as ug:
        pool = UpstreamPool(
            [
                UpstreamConfig(ub, "m", max_batch=4, timeout_s=1),
                UpstreamConfig(ug, "m", max_batch=4),
            ]
        )
        await pool.probe_due()
        bad.mode = mode  # healthy at admission, broken afterwards
        try:
            vectors = await pool.embed(TEXTS)
        finally:
            await pool.aclose()
    assert np.array_equal(vectors, expected(TEXTS))
    broken = pool.upstreams[0]
    assert broken.ejections >= 1 and broken.needs_probe
    if mode == "429":  # its Retry-After is honoured
        assert broken.ejected_until - __import__("time").monotonic() > 5


@pytest.mark.anyio
async def test_a_reset_connection_is_retried_elsewhere() -> None:
    good = Behaviour()

    with resetting_upstream() as ur, fake_upstream(good) as ug:
        pool = UpstreamPool([UpstreamConfig(ur, "m"), UpstreamConfig(ug, "m")])
        pool.upstreams[0].needs_probe = False  # as if it had been admitted
        await pool.probe(pool.upstreams[1])
        try:
            result = await pool.embed(TEXTS)
        finally:
            await pool.aclose()
    assert np.array_equal(result, expected(TEXTS))


@pytest.mark.anyio
async def test_an_upstream_serving_another_model_is_refused_at_admission() -> None:
    first, other = Behaviour(), Behaviour(mode="other-model")

    with fake_upstream(first) as uf, fake_upstream(other) as uo:
        pool = UpstreamPool([UpstreamConfig(uf, "m"), UpstreamConfig(uo, "m")])
        await pool.probe(pool.upstreams[0])
        await pool.probe(pool.upstreams[1])
        await pool.aclose()
    assert [u.needs_probe for u in pool.upstreams] == [False, True]
    assert pool.fingerprint is not None and len(pool.fingerprint) == 16


@pytest.mark.anyio
async def test_an_input_the_upstream_refuses_is_the_clients_400() -> None:
    refusing = Behaviour()

    with fake_upstream(refusing) as url:
        pool = await admitted(url)
        refusing.mode = "refuse"
        try:
            with pytest.raises(ServiceError) as error:
                await pool.embed(["x"])
        finally:
            await pool.aclose()
    assert error.value.kind is ErrorKind.INVALID_INPUT and "input too long" in error.value.message


@pytest.mark.anyio
async def test_floats_from_an_upstream_without_base64() -> None:
    plain = Behaviour(mode="no-base64")

    with fake_upstream(plain) as url:
        pool = await admitted(url)
        try:
            vectors, base64 = await pool.embed(TEXTS), pool.upstreams[0].base64
        finally:
            await pool.aclose()
    assert not base64 and np.allclose(vectors, expected(TEXTS), atol=1e-6)


@pytest.mark.anyio
async def test_no_upstream_left_is_a_503_with_retry_after() -> None:
    down = Behaviour()

    with fake_upstream(down) as url:
        pool = await admitted(url)
        down.mode = "500"
        try:
            with pytest.raises(ServiceError) as error:
                await pool.embed(["x"], deadline_s=1.5)
        finally:
            await pool.aclose()
    assert error.value.kind is ErrorKind.MODEL_UNAVAILABLE
    assert error.value.retry_after_s is not None and error.value.retry_after_s > 0


@pytest.mark.anyio
async def test_weights_share_the_traffic() -> None:
    heavy, light = Behaviour(delay_s=0.2), Behaviour(delay_s=0.2)

    with fake_upstream(heavy) as uh, fake_upstream(light) as ul:
        pool = UpstreamPool(
            [
                UpstreamConfig(uh, "m", max_batch=1, max_concurrency=64, weight=3),
                UpstreamConfig(ul, "m", max_batch=1, max_concurrency=64, weight=1),
            ]
        )
        await pool.probe_due()
        try:
            await pool.embed([f"t{i}" for i in range(40)])
        finally:
            await pool.aclose()
    assert heavy.calls > 2 * light.calls  # about 3:1 (each also answered one probe)


@pytest.mark.anyio
async def test_with_no_upstream_left_the_reason_names_each_fault() -> None:
    wrong = Behaviour(mode="dims")

    with fake_upstream(wrong) as url:
        pool = UpstreamPool([UpstreamConfig(url, "m")], dimensions=32)
        await pool.probe_due()
        try:
            reason = pool.why_none()
        finally:
            await pool.aclose()
    assert "dimension 40, expected 32" in reason and "no embedding upstream" in reason


@pytest.mark.anyio
async def test_a_recovered_upstream_is_admitted_without_waiting_out_its_backoff() -> None:
    """Each failed health probe doubles the backoff (1 s .. 30 s); the first probe that
    passes admits the upstream at once, so a gateway is ready again within one health
    interval of its engine serving again, however long the engine was down."""
    flaky = Behaviour()
    with fake_upstream(flaky) as url:
        pool = await admitted(url)
        try:
            flaky.mode = "500"
            for _ in range(5):  # down for a while: the backoff has grown to 30 s
                await pool.check_health()
            upstream = pool.upstreams[0]
            assert not pool.healthy() and upstream.ejected_until - time.monotonic() > 10
            flaky.mode = "ok"
            await pool.check_health()
            assert pool.healthy() == [upstream] and upstream.backoff_s == 1.0
        finally:
            await pool.aclose()
