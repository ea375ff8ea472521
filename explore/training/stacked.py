"""The seeds of one configuration trained as one stacked head (``seeds_stacked``).

The head loop of :mod:`explore.training.head` with a leading seed dimension: each model
parameter becomes one ``[S, ...]`` tensor (``torch.func.stack_module_state``) and every
forward pass is one batched call (``vmap`` of the model's own ``forward``: an ``[S, C, d]``
linear head is one batched product). Per step the loss is the sum over seeds of each seed's
mean loss, so each seed's gradient is its own; the optimisers are element-wise (SGD, Adam),
so each seed's update is its own too. Each seed keeps its generator, sampler order, mixing,
plug-ins and selected epoch: the result equals :func:`~explore.training.head.fit_head` run
seed after seed, within float rounding (tests/recipes/test_seeds_stacked.py).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from explore.methods.baselines import cross_entropy_loss
from explore.plugins import Plugins
from explore.training import head as loop

__all__ = ["SeedStack", "fit_stacked"]


class SeedStack:
    """S models of one architecture as one batched model; ``models`` see its values only
    through :meth:`write` (the stack owns the trained tensors)."""

    def __init__(self, models: list[nn.Module]) -> None:
        self.models = models
        params, buffers = stack_module_state(models)
        self.params: dict[str, torch.Tensor] = params
        # A buffer equal in every model (LFM's text features) is passed once, unbatched.
        first = dict(models[0].named_buffers())
        same = {name for name, t in first.items()
                if all(torch.equal(dict(m.named_buffers())[name], t) for m in models[1:])}
        self.buffers = {name: (first[name] if name in same else t) for name, t in buffers.items()}
        buffer_dims = {name: (None if name in same else 0) for name in self.buffers}
        self.base = copy.deepcopy(models[0]).to("meta")  # the architecture; holds no values

        def call(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                 x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (x,))

        self._per_seed_inputs: Callable[..., torch.Tensor] = vmap(call, in_dims=(0, buffer_dims, 0))
        self._shared_input: Callable[..., torch.Tensor] = vmap(call, in_dims=(0, buffer_dims, None))

    @property
    def trainable(self) -> list[torch.Tensor]:
        return [p for p in self.params.values() if p.requires_grad]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[S, B, C]`` of each seed's inputs ``x`` ``[S, B, d]``."""
        return self._per_seed_inputs(self.params, self.buffers, x)

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)

    @torch.no_grad()
    def top1(self, split: tuple[torch.Tensor, torch.Tensor]) -> list[float]:
        """Every seed's top-1 on ``split`` (on its device; S counts read back)."""
        self.base.eval()
        x, y = split
        step = loop._PREDICT_BATCH
        correct = sum((self._shared_input(self.params, self.buffers, x[s : s + step]).argmax(2)
                       == y[s : s + step]).sum(1) for s in range(0, len(x), step))
        assert isinstance(correct, torch.Tensor)
        return [int(c) / len(x) for c in correct.tolist()]

    def state(self, s: int) -> dict[str, torch.Tensor]:
        """Seed ``s``'s values (a copy) of every parameter and per-seed buffer."""
        return {name: t[s].detach().clone() for name, t in self.params.items()}

    @torch.no_grad()
    def write(self, s: int, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """Seed ``s``'s model holding ``state`` (default: the stack's current values)."""
        model = self.models[s]
        values = state if state is not None else {n: t[s] for n, t in self.params.items()}
        for name, param in model.named_parameters():
            param.copy_(values[name])
        return model


def fit_stacked(models: list[nn.Module], train: loop.Rows, val: loop.Rows | None,
                cfg: loop.HeadTrainConfig, seeds: list[int], plugins: list[Plugins],
                device: torch.device) -> list[loop.HeadFit]:
    """:func:`~explore.training.head.fit_heads` with the seeds stacked (see the module)."""
    start = time.perf_counter()
    S = len(seeds)
    for model in models:
        model.to(device)
    stack = SeedStack(models)
    rngs = [np.random.default_rng(seed) for seed in seeds]
    labels = loop._labels(train)
    x, y = loop.on_device(train, device)
    val_rows = loop.on_device(val, device) if val is not None else None
    extra = [p for plugin in plugins for p in plugin.parameters]
    opt = loop._optimizer([*stack.trainable, *extra], cfg)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs,
                                                       eta_min=cfg.lr * cfg.min_lr_ratio)
    states: list[dict[int, dict[str, torch.Tensor]]] = [{} for _ in seeds]
    curves: list[list[float]] = [[] for _ in seeds]
    best = [-1.0] * S
    hook = loop._EPOCH_HOOK.get() if val_rows is not None else None
    for epoch in range(cfg.epochs):
        orders = [p.sample_indices(labels, epoch, rng) if p.sample_indices is not None
                  else rng.permutation(len(labels)) for p, rng in zip(plugins, rngs)]
        if len({len(o) for o in orders}) != 1:
            raise ValueError("stacked seeds need epochs of one length for every seed; this "
                             "method's sampler varies it: set head.seeds_stacked=false")
        order = torch.as_tensor(np.stack(orders), device=device)
        losses = _train_epoch(stack, opt, x, y, order, cfg.batch_size, plugins, epoch, rngs)
        sched.step()
        for s, plugin in enumerate(plugins):
            if plugin.on_epoch_end is not None:
                plugin.on_epoch_end(epoch, stack.write(s), {"train_loss": losses[s]})
        wanted = val_rows is not None and (cfg.select == "best_val" or hook is not None)
        accs = stack.top1(val_rows) if val_rows is not None and wanted else []
        if accs and cfg.select == "best_val":
            for s, acc in enumerate(accs):
                curves[s].append(acc)
                if acc > best[s]:  # keep only the state that can still be selected
                    best[s] = acc
                    states[s] = {epoch + 1: stack.state(s)}
        if hook is not None:
            for s, seed in enumerate(seeds):
                hook(seed, epoch + 1, accs[s])
    seconds = (time.perf_counter() - start) / S
    fits = []
    for s in range(S):
        best_epoch = loop.select_epoch(curves[s], cfg.epochs)
        model = stack.write(s, states[s].get(best_epoch))
        fits.append(loop.HeadFit(model, best_epoch, curves[s], seconds))
    return fits


def _train_epoch(stack: SeedStack, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 order: torch.Tensor, batch_size: int, plugins: list[Plugins], epoch: int,
                 rngs: list[np.random.Generator]) -> list[float]:
    """One epoch of every seed; each seed's mean training loss (as the sequential loop's)."""
    stack.train()
    S = len(plugins)
    plain = all(p.loss is None and p.mix is None for p in plugins)  # one batched CE
    losses: list[torch.Tensor] = []
    sizes: list[int] = []
    for s0 in range(0, order.shape[1], batch_size):
        idx = order[:, s0 : s0 + batch_size]  # [S, B]: each seed's own batch
        inputs, targets = x[idx], y[idx]
        if plain:
            per_seed = cross_entropy_loss(stack(inputs).flatten(0, 1), targets.flatten(),
                                          epoch).view(S, -1).mean(1)
        else:
            mixed: list[tuple[torch.Tensor, Any]] = [
                p.mix(inputs[s], targets[s], epoch, rngs[s]) if p.mix is not None
                else (inputs[s], targets[s]) for s, p in enumerate(plugins)]
            logits = stack(torch.stack([m[0] for m in mixed]))
            per_seed = torch.stack([(p.loss or cross_entropy_loss)(logits[s], mixed[s][1], epoch)
                                    .mean() for s, p in enumerate(plugins)])
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(per_seed.sum())  # each seed's gradient is its own loss's
        opt.step()
        losses.append(per_seed.detach())  # read once after the epoch, not per batch
        sizes.append(idx.shape[1])
    by_batch = torch.stack(losses).T.tolist() if losses else [[] for _ in plugins]
    return [loop._mean_loss(values, sizes) for values in by_batch]
