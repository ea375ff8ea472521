"""A 'trial process' of the GPU check's packing part (``benchmarks.gpu.bench_packing``):
imports torch alone, so that four of them start quickly."""

from __future__ import annotations

import time
from typing import Any

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def head_epochs(x: torch.Tensor, num_classes: int, rows: int, batch: int, epochs: int) -> float:
    """Seconds for ``epochs`` epochs of a linear head's products (forward and weight
    gradient per batch of ``batch`` of ``rows`` rows), on ``x``'s device."""
    weight = 0.01 * torch.randn(num_classes, x.shape[1], device=x.device)
    grad_out = torch.randn(batch, num_classes, device=x.device)
    span = max(len(x) - batch, 1)
    _sync(x.device)
    start = time.perf_counter()
    for _ in range(epochs):
        for lo in range(0, rows, batch):
            xb = x[lo % span:lo % span + min(batch, rows - lo)]
            xb.mm(weight.t())
            grad_out[:len(xb)].t().mm(xb)
    _sync(x.device)
    return time.perf_counter() - start


def trial_worker(device: str, d: int, num_classes: int, rows: int, epochs: int, jobs: Any, done: Any) -> None:
    """Warm up, say so, then run ``epochs`` epochs per job until told to stop (None)."""
    dev = torch.device(device)
    x = torch.randn(min(rows, 32_768), d, device=dev)
    head_epochs(x, num_classes, rows, 256, 1)
    done.put(0.0)
    while jobs.get() is not None:
        done.put(head_epochs(x, num_classes, rows, 256, epochs))
