"""The recipe registry against ``search_spaces/``, and the protocol every recipe keeps."""

from __future__ import annotations

import dataclasses

import pytest

from explore.config import SPACES_DIR, list_spaces, load
from explore.recipes import RECIPES, knob_columns
from explore.recipes.bases import BASES


def test_registry_matches_search_spaces():
    assert {p.stem for p in (SPACES_DIR / "method").glob("*.yaml")} == set(RECIPES)
    assert {p.stem for p in (SPACES_DIR / "base").glob("*.yaml")} == set(BASES)
    for space in list_spaces():
        cfg = load([space])
        recipe = RECIPES[cfg.method]
        fields = {f.name for f in dataclasses.fields(recipe.params(cfg.method_settings))}
        assert set(cfg.space) <= fields, space
        assert set(cfg.space) <= set(recipe.knobs), space  # swept knobs are result columns


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_declares_typed_knobs_of_its_params(name):
    recipe = RECIPES[name]
    params = recipe.params({})
    assert dataclasses.is_dataclass(params)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(params, recipe.knobs[0], None)
    assert set(recipe.columns(params)) == set(recipe.knobs)
    with pytest.raises(ValueError, match="unknown parameter"):
        recipe.params({"no_such_knob": 1})


def test_knob_columns_have_their_natural_types():
    types = knob_columns()
    assert types["k"] is int and types["W"] is int
    assert types["rho"] is float and types["tau"] is float and types["lambda_s"] is float
    assert types["distance"] is str


def test_full_mode_is_declared_by_the_recipes_that_have_it():
    assert {n for n, r in RECIPES.items() if r.has_full_mode} == {
        "swrm", "dyswrm", "neighbor_silencing", "lfm"}
