"""numpy → torch without copies of large feature arrays."""

from __future__ import annotations

import warnings

import numpy as np
import torch


def tensor_view(x: np.ndarray, dtype: type = np.float32) -> torch.Tensor:
    """A tensor viewing ``x`` (no copy when it already has ``dtype`` and is contiguous).

    Store reads are read-only views of the shard files, and a copy of ImageNet-LT's
    features would cost 1.5 GB. torch warns about read-only arrays because it cannot
    enforce read-only-ness; callers only read these tensors.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(x, dtype=dtype))


def to_device(x: np.ndarray | torch.Tensor, device: torch.device,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``x`` as a ``dtype`` tensor on ``device``: a view on the CPU (see :func:`tensor_view`),
    one copy from pinned host memory to an accelerator, nothing when it is there already."""
    if not isinstance(x, torch.Tensor):
        x = tensor_view(x, np.dtype(str(dtype).removeprefix("torch.")).type)
    if x.device != device and device.type == "cuda" and x.device.type == "cpu":
        return x.to(dtype).pin_memory().to(device, non_blocking=True)
    return x.to(device=device, dtype=dtype)
