"""Pure method maths, one module per paper: no Ray, Hydra or S3, and no training loops.

Each module opens with its paper and the equations it implements; the resolutions of what
the papers leave open are stated in docs/methods.md. The recipes in ``explore.recipes``
wire these functions into training. The methods' parameters (frozen dataclasses, no torch)
are in :mod:`explore.methods.params`; the maths modules (torch) are imported on first use
(PEP 562), so that a sweep's driver can check params without importing torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from explore.methods import (
        alphanet,
        baselines,
        lfm,
        neighbor_silencing,
        params,
        prototypes,
        swrm,
    )

__all__ = ["alphanet", "baselines", "lfm", "neighbor_silencing", "params", "prototypes", "swrm"]


def __getattr__(name: str) -> ModuleType:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module(f"{__name__}.{name}")
