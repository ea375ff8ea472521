"""Results on fixed seeds at every method's *current* defaults.

``golden_current_defaults.json`` holds the rows the recipes gave on small synthetic
features when it was recorded (issue 20, after the fidelity work): SWRM with the capped
t-SNE perplexity, DySWRM with ``s_objective=confusion``, LFM with and without MMS,
neighbor silencing with ``ratio_by=classes`` from each neighbour source (with the bundled
``aux_base_count=1``, where the ratio decides how many auxiliary classes a target gets;
with 5 every target takes the whole pool of 5), AlphaNet, and every base recipe (CE, cRT,
LWS, τ-norm, NCM, balanced softmax, logit adjustment).
``test_results_unchanged.py`` pins the older defaults; this file holds the next
restructuring to today's. Each case names only the settings it sets; everything else is
the recipe's default, so a changed default shows here as a changed row.

Re-record (only when a result changes on purpose, saying why in the commit):
``python -m tests.recipes.test_results_current_defaults [CASE ...]`` (only the cases named,
when any).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from explore.recipes import get_recipe
from explore.recipes.bases import BaseSpec, train_base
from explore.splits import SplitThresholds
from explore.store import FeatureSet, FeatureSplit
from explore.training.head import HeadTrainConfig
from explore.training.inputs import TrialInputs
from explore.training.posthoc import build_posthoc_inputs
from tests.support.synthetic import AUX_COUNTS, AUX_NAMES, CLASS_NAMES, feature_arrays

GOLDEN_PATH = Path(__file__).parent / "golden_current_defaults.json"
HEAD = HeadTrainConfig(epochs=4, batch_size=64, lr=0.05)
SEEDS = (3, 4)
NEIGHBOR_MAP = {"lion": ["tiger"], "wolf": ["fox"], "zebra": ["pony", "tiger"],
                "car": ["van", "bus"]}
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "alphanet": ("alphanet", {"k": 3}),
    "swrm": ("swrm", {"W": 4, "beta": 2.0}),
    "swrm_swm_ldam": ("swrm", {"W": 5, "components": "swm", "margin_sign": "ldam"}),
    "dyswrm": ("dyswrm", {"W": 3}),
    "lfm": ("lfm", {}),
    "lfm_mms": ("lfm", {"mms": True, "alpha": 0.5, "tau": 0.25}),
    "ns_text": ("neighbor_silencing", {"aux_base_count": 1}),
    "ns_prototype": ("neighbor_silencing", {"lambda_s": 0.3, "neighbor_source": "prototype",
                                            "aux_base_count": 1}),
    "ns_map": ("neighbor_silencing", {"neighbor_map": "<map>"}),
    # the bases are recipes too (issue 17): each at its defaults, the one-knob ones also off it
    "ce": ("ce", {}),
    "crt": ("crt", {}),
    "lws": ("lws", {}),
    "tau_norm": ("tau_norm", {}),
    "tau_norm_half": ("tau_norm", {"tau": 0.5}),
    "ncm_cosine": ("ncm", {"metric": "cosine"}),
    "balanced_softmax": ("balanced_softmax", {}),
    "logit_adjustment": ("logit_adjustment", {}),
    "logit_adjustment_2": ("logit_adjustment", {"tau": 2.0}),
}


def _features() -> tuple[FeatureSet, dict[str, tuple[np.ndarray, np.ndarray]]]:
    arrays = feature_arrays(seed=0, d=16)
    splits = {n: FeatureSplit(x, y) for n, (x, y) in arrays.items()}
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(len(AUX_NAMES), 16))
    y = np.concatenate([np.full(n, a) for a, n in enumerate(AUX_COUNTS)])
    splits["aux"] = FeatureSplit((centers[y] + rng.normal(size=(len(y), 16))).astype(np.float32), y)
    return FeatureSet(splits, CLASS_NAMES, {"aux_classes": list(AUX_NAMES)}), arrays


def compute(case: str, neighbor_map: Path) -> list[dict[str, Any]]:
    """The rows of one case: per seed, the selected epoch, test/val metrics and the
    numeric records."""
    method, settings = CASES[case]
    if settings.get("neighbor_map") == "<map>":
        settings = {**settings, "neighbor_map": str(neighbor_map)}
    fset, arrays = _features()
    splits = {n: arrays[n] for n in ("train", "val", "test")}
    recipe = get_recipe(method)
    th = SplitThresholds()
    posthoc = None
    if recipe.posthoc:
        crt = train_base(BaseSpec.from_mapping({"name": "crt"}, HEAD), splits, len(CLASS_NAMES), 0)
        posthoc = build_posthoc_inputs(splits, crt, len(CLASS_NAMES), th)
    fit = recipe.fit_head(TrialInputs(fset, posthoc, th, HEAD), recipe.params(settings), SEEDS)
    return [{"seed": r.seed, "best_epoch": r.best_epoch, "test": r.test, "val": r.val,
             "records": {k: float(v) for k, v in r.records.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)}}
            for r in fit.results]


@pytest.fixture(scope="module")
def neighbor_map(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nmap") / "map.json"
    path.write_text(json.dumps(NEIGHBOR_MAP))
    return path


def test_every_method_has_a_case_at_its_current_defaults():
    from explore.recipes import RECIPES

    methods = {m for m, _ in CASES.values()}
    assert methods == set(RECIPES)
    assert set(json.loads(GOLDEN_PATH.read_text())) == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rows_at_current_defaults_are_unchanged(case, neighbor_map):
    want = json.loads(GOLDEN_PATH.read_text())[case]
    got = compute(case, neighbor_map)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g["seed"], g["best_epoch"]) == (w["seed"], w["best_epoch"])
        for part in ("test", "val", "records"):
            assert set(g[part]) == set(w[part]), part
            for key, value in w[part].items():
                assert g[part][key] == pytest.approx(value, abs=1e-9), (part, key)


if __name__ == "__main__":  # re-record, with one torch thread as the tests run
    import tempfile

    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        nmap = Path(tmp) / "map.json"
        nmap.write_text(json.dumps(NEIGHBOR_MAP))
        only = sys.argv[1:]  # case names: record just these, keep the others as they are
        golden = json.loads(GOLDEN_PATH.read_text()) if only else {}
        golden |= {case: compute(case, nmap) for case in (only or CASES)}
    GOLDEN_PATH.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN_PATH} ({len(golden)} cases)", file=sys.stderr)
