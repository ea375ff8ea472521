"""Pure method maths, one module per paper: no Ray, Hydra or S3, and no training loops.

Each module opens with its paper and the equations it implements; the resolutions of what
the papers leave open are stated in docs/methods.md. The recipes in ``explore.recipes``
wire these functions into training.
"""

from explore.methods import alphanet, baselines, lfm, neighbor_silencing, prototypes, swrm

__all__ = ["alphanet", "baselines", "lfm", "neighbor_silencing", "prototypes", "swrm"]
