"""Methods that read the class names' text cannot run on features whose classes are only
numbers (imported without classes.txt): refused before any trial, naming the file to add,
while the methods that need no names run."""

from __future__ import annotations

import numpy as np
import pytest

from explore.config import ConfigError, load
from explore.pipeline import plan
from explore.recipes import RecipeError, get_recipe
from explore.splits import SplitThresholds
from explore.store import FeatureStore
from explore.sweep.plan import checked_space
from explore.training.inputs import DataFacts
from tests.support.synthetic import write_feature_dir

COUNTS = np.array([40, 30, 20, 12, 8, 5, 3, 2, 2])


def _facts(named: bool) -> DataFacts:
    return DataFacts(len(COUNTS), COUNTS, SplitThresholds(), aux_classes=("fox", "van"),
                     class_names_given=named)


def test_lfm_and_text_neighbours_need_names_prototype_neighbours_do_not():
    lfm, ns = get_recipe("lfm"), get_recipe("neighbor_silencing")
    with pytest.raises(RecipeError, match="lfm .* needs the classes' names.*classes.txt"):
        lfm.check(lfm.params({}), _facts(named=False))
    with pytest.raises(RecipeError, match="neighbor_source=text .* classes.txt"):
        ns.check(ns.params({"neighbor_source": "text"}), _facts(named=False))
    ns.check(ns.params({"neighbor_source": "prototype"}), _facts(named=False))
    lfm.check(lfm.params({}), _facts(named=True))


def test_a_sweep_on_nameless_imported_features_is_refused_before_ray(tmp_path):
    feats = write_feature_dir(tmp_path / "feats")
    (feats / "classes.txt").unlink(missing_ok=True)
    cfg = load(["lfm_alpha_tau", f"features={feats}", f"storage_uri={tmp_path / 'store'}"])
    found = plan(cfg, get_recipe("lfm"), FeatureStore(str(tmp_path / "store")))
    assert not found.facts.class_names_given
    with pytest.raises(ConfigError, match="classes.txt"):
        checked_space(cfg, get_recipe("lfm"), found.facts)
