"""Fake models for the model-process tests, loaded in the child by reference.

The first id of a batch picks the behaviour, so a test can make one pass fail, hang or
report what the child can see, without a real model; a row starting with KILL anywhere in a
batch kills the child.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from embedgate.engine.backends.hf_tokenizer import IdArray
from embedgate.engine.pooling import FloatArray

RAISE, HANG, ENV, KILL = 1, 2, 3, 4


class FakeProcessModel:
    device_name = "cpu"
    dtype_name = "float32"

    def forward(self, ids: IdArray, mask: IdArray) -> FloatArray:
        if (ids[:, 0] == KILL).any():  # a crash in native code, as the kernel sees it
            os.kill(os.getpid(), signal.SIGKILL)
        first = int(ids[0, 0])
        if first == RAISE:
            raise ValueError("this batch is bad")
        if first == HANG:
            time.sleep(120)
        if first == ENV:
            leaked = [k for k in os.environ if k.upper().startswith("EMBEDGATE_")]
            return np.full((len(ids), 2), len(leaked), dtype=np.float32)
        return (ids * mask).sum(axis=1, keepdims=True).astype(np.float32).repeat(2, axis=1)


def load_fake() -> FakeProcessModel:
    return FakeProcessModel()


def load_broken() -> FakeProcessModel:
    raise FileNotFoundError("no weights in /nowhere")


def load_and_exit() -> FakeProcessModel:
    os._exit(3)


def load_unless(marker: str) -> FakeProcessModel:
    """Loads until `marker` exists: a restart that fails."""
    if os.path.exists(marker):
        raise RuntimeError("the weights are gone")
    return FakeProcessModel()
