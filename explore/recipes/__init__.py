"""Method recipes: one module per method, everything specific to it in one place.

``RECIPES`` lists them by the name the ``method`` config group uses;
``tests/recipes/test_registry.py`` keeps it equal to ``search_spaces/method/``.
"""

from explore.recipes._recipe import Recipe, RecipeError
from explore.recipes.alphanet import AlphaNetRecipe
from explore.recipes.lfm import LFMRecipe
from explore.recipes.neighbor_silencing import NeighborSilencingRecipe
from explore.recipes.swrm import DySWRMRecipe, SWRMRecipe

__all__ = ["RECIPES", "Recipe", "RecipeError", "get_recipe", "knob_columns"]

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (AlphaNetRecipe(), SWRMRecipe(), DySWRMRecipe(), NeighborSilencingRecipe(),
                   LFMRecipe())
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise RecipeError(f"unknown method {name!r}; known methods: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def knob_columns() -> dict[str, type]:
    """Every recipe's knob columns with their Python types (from the params' fields), in a
    stable order: the result files' typed knob columns."""
    import dataclasses
    import typing

    out: dict[str, type] = {}
    for recipe in RECIPES.values():
        hints = typing.get_type_hints(recipe.params_type)
        fields = {f.name for f in dataclasses.fields(recipe.params_type)}
        for knob in recipe.knobs:
            if knob not in fields:
                raise TypeError(f"{recipe.name}: knob {knob!r} is not a field of its params")
            hint = hints[knob]
            out.setdefault(knob, hint if isinstance(hint, type) else str)
    return out
