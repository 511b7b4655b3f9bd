"""The host's measured matmul speed, printed with every benchmark: hosts of one kind differ by
up to 2x, so a figure without it cannot be compared with another run."""

from __future__ import annotations

import time


def matmul_gflops(dtype_name: str, size: int = 1024, seconds: float = 1.0) -> float:
    import torch

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        runs += 1
    elapsed = time.perf_counter() - started
    return 2 * size**3 * runs / elapsed / 1e9


def host_line() -> str:
    return (
        f"host: fp32 matmul {matmul_gflops('float32'):.0f} GFLOP/s, "
        f"bf16 {matmul_gflops('bfloat16'):.0f} GFLOP/s (1024x1024, torch threads default)"
    )


if __name__ == "__main__":
    print(host_line())
