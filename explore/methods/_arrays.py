"""numpy-or-torch in, the same kind out: the conversions every method module shares."""

from __future__ import annotations

from typing import TypeVar, overload

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def as_tensor(x: np.ndarray | torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Tensors pass through unchanged (keeping autograd); arrays become ``dtype`` tensors
    where arrays live, on the CPU (whatever torch's default device)."""
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(np.asarray(x), dtype=dtype, device="cpu")


def checks_values(*tensors: torch.Tensor) -> bool:
    """Whether a check that reads tensor values back should run: yes on the host, where it
    is free; not on an accelerator, where it would wait for the device once per call (per
    training batch). There an out-of-range index still fails, in the device's own gather."""
    return all(t.device.type == "cpu" for t in tensors)


@overload
def like(result: torch.Tensor, template: np.ndarray) -> np.ndarray: ...
@overload
def like(result: torch.Tensor, template: torch.Tensor) -> torch.Tensor: ...
def like(result: torch.Tensor, template: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``result`` as a tensor when ``template`` was one, else as a numpy array (typed per
    kind, so a function of ``ArrayT`` returns ``ArrayT``)."""
    if isinstance(template, torch.Tensor):
        return result
    return result.detach().cpu().numpy()
