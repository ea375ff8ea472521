"""Fixtures of the recipe tests: small synthetic features with an auxiliary pool."""

from __future__ import annotations

import json

import pytest

from explore.splits import SplitThresholds
from explore.training.head_config import HeadTrainConfig
from explore.training.inputs import TrialInputs
from tests.support.synthetic import feature_set
from tests.support.torch_threads import one_torch_thread

FAST = HeadTrainConfig(epochs=4, batch_size=64)


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="package")
def inputs() -> TrialInputs:
    return TrialInputs(feature_set(), None, SplitThresholds(), FAST)


@pytest.fixture(scope="package")
def neighbor_map(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("nmap") / "map.json"
    path.write_text(json.dumps({"lion": ["tiger"], "wolf": ["fox"], "zebra": ["pony", "tiger"],
                                "car": ["van", "bus"]}))
    return str(path)


class PluginSpy:
    """Wraps ``train_seeds`` (which a recipe module imports where it trains) to keep the
    model and plug-ins each seed trained with: tests then check them against independent
    computations (the real loop still runs, and trains the very models kept here).
    ``module``: the recipe module under test (its fit imports ``train_seeds`` from
    ``explore.training.head`` when it runs, so that is where the spy goes)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module) -> None:
        from explore.training import head

        self.calls: list[dict] = []
        real = head.train_seeds

        def spy(seeds, data, cfg, make, *, device=None, train=None):
            def recorded(seed, rows):
                model, plugins = make(seed, rows)
                self.calls.append({"model": model, "seed": seed, "plugins": plugins, "cfg": cfg,
                                   "train": train if train is not None else data.train})
                return model, plugins

            return real(seeds, data, cfg, recorded, device=device, train=train)

        assert not hasattr(module, "train_seeds"), "the recipe imports train_seeds where it trains"
        monkeypatch.setattr(head, "train_seeds", spy)


@pytest.fixture()
def spy_on(monkeypatch):
    return lambda module: PluginSpy(monkeypatch, module)
