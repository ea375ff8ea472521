"""The recipe registry against ``search_spaces/``, and the protocol every recipe keeps."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from explore.config import SPACES_DIR, compose, list_spaces, load
from explore.recipes import RECIPES, BaseRecipe, Recipe, knob_columns
from explore.recipes.bases import BaseSpec
from explore.training.full import FullModeError

BASES = sorted(n for n, r in RECIPES.items() if isinstance(r, BaseRecipe))


def test_registry_matches_search_spaces():
    assert {p.stem for p in (SPACES_DIR / "method").glob("*.yaml")} == set(RECIPES)
    for space in list_spaces():
        cfg = load([space])
        recipe = RECIPES[cfg.method]
        fields = {f.name for f in dataclasses.fields(recipe.params(cfg.method_settings))}
        assert set(cfg.space) <= fields, space
        assert set(cfg.space) <= set(recipe.knobs), space  # swept knobs are result columns


def test_every_base_group_option_is_a_base_recipe_with_its_method_settings():
    """``base=X`` selects the base recipe X with the settings of ``method/X.yaml``."""
    options = {p.stem for p in (SPACES_DIR / "base").glob("*.yaml")}
    assert options and options <= set(BASES)
    for name in options:
        raw = compose("swrm_window", [f"base={name}"])
        assert dict(raw["base"]) == dict(OmegaConf.load(SPACES_DIR / "method" / f"{name}.yaml"))
        spec = BaseSpec.from_mapping(dict(raw["base"]))
        assert spec.recipe is RECIPES[name] and spec.settings == RECIPES[name].params({})


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_declares_typed_knobs_of_its_params(name):
    recipe = RECIPES[name]
    params = recipe.params({})
    assert dataclasses.is_dataclass(params)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(params, recipe.knobs[0] if recipe.knobs else "anything", None)
    assert set(recipe.columns(params)) == set(recipe.knobs)
    with pytest.raises(ValueError, match="unknown parameter"):
        recipe.params({"no_such_knob": 1})


def test_knob_columns_have_their_natural_types():
    types = knob_columns()
    assert types["k"] is int and types["W"] is int
    assert types["rho"] is float and types["tau"] is float and types["lambda_s"] is float
    assert types["distance"] is str and types["metric"] is str


def _recipe(name: str, annotation: type) -> Recipe:
    params = dataclasses.make_dataclass(f"{name}Params", [("tau", annotation, 1)], frozen=True)
    return type(f"{name}Recipe", (Recipe,), {"name": name, "params_type": params,
                                            "knobs": ("tau",)})()


def test_a_knob_column_shared_with_another_type_is_refused_naming_both_recipes():
    assert knob_columns([_recipe("first", float), _recipe("second", float)]) == {"tau": float}
    with pytest.raises(TypeError, match=r"knob column 'tau': first gives it type float, "
                                        r"second type int"):
        knob_columns([_recipe("first", float), _recipe("second", int)])


def test_full_mode_is_declared_by_the_training_time_methods():
    """Every training-time method trains a backbone in full mode; a post-hoc method
    (corrects a trained classifier) and a base (a linear classifier) have no full mode, and
    asking for one is a FullModeError that names the recipe."""
    for name, recipe in RECIPES.items():
        trains_features = not recipe.posthoc and not isinstance(recipe, BaseRecipe)
        assert recipe.has_full_mode == trains_features, name
        if not recipe.has_full_mode:
            with pytest.raises(FullModeError, match=f"not available for {name}"):
                recipe.full_plan(recipe.params({}), None, 0)  # type: ignore[arg-type]
