"""Recipes: one per method or base, everything specific to it in one place.

``RECIPES`` is the one list of everything that trains: methods and base recipes (each a
linear classifier per seed), by the name the ``method`` config group uses;
``tests/recipes/test_registry.py`` keeps it equal to ``search_spaces/method/``.

Knob columns share one namespace: a knob is a result column named exactly like it, so two
recipes with a knob of the same name (LFM's and τ-norm's ``tau``) write the same column.
They may only if the knob has the same Python type in both; a conflict is an error when
this package is imported (:func:`knob_columns`), naming both recipes and the column.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable

from explore.recipes._recipe import BaseRecipe, Recipe, RecipeError, ReferenceRecipe
from explore.recipes.alphanet import AlphaNetRecipe
from explore.recipes.bases import (
    BalancedSoftmaxRecipe,
    CERecipe,
    CRTRecipe,
    LogitAdjustmentRecipe,
    LWSRecipe,
    NCMRecipe,
    TauNormRecipe,
)
from explore.recipes.lfm import LFMRecipe
from explore.recipes.neighbor_silencing import NeighborSilencingRecipe
from explore.recipes.swrm import DySWRMRecipe, SWRMRecipe

__all__ = ["RECIPES", "BaseRecipe", "Recipe", "RecipeError", "ReferenceRecipe", "get_recipe",
           "knob_columns"]

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (AlphaNetRecipe(), SWRMRecipe(), DySWRMRecipe(), NeighborSilencingRecipe(),
                   LFMRecipe(), CERecipe(), CRTRecipe(), LWSRecipe(), TauNormRecipe(),
                   NCMRecipe(), BalancedSoftmaxRecipe(), LogitAdjustmentRecipe())
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise RecipeError(f"unknown method {name!r}; known methods: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def knob_columns(recipes: Iterable[Recipe] | None = None) -> dict[str, type]:
    """Every recipe's knob columns with their Python types (from the params' fields), in a
    stable order: the result files' typed knob columns.

    Raises TypeError when a knob is not a field of its recipe's params, or when two recipes
    give one column different types (rename one knob: a column holds one type).
    """
    out: dict[str, type] = {}
    owner: dict[str, str] = {}
    for recipe in RECIPES.values() if recipes is None else recipes:
        hints = typing.get_type_hints(recipe.params_type)
        fields = {f.name for f in dataclasses.fields(recipe.params_type)}
        for knob in recipe.knobs:
            if knob not in fields:
                raise TypeError(f"{recipe.name}: knob {knob!r} is not a field of its params")
            hint = hints[knob]
            kind = hint if isinstance(hint, type) else str
            if knob in out and out[knob] is not kind:
                raise TypeError(
                    f"knob column {knob!r}: {owner[knob]} gives it type {out[knob].__name__}, "
                    f"{recipe.name} type {kind.__name__}; a column holds one type, so rename "
                    "one of the knobs")
            out.setdefault(knob, kind)
            owner.setdefault(knob, recipe.name)
    return out


knob_columns()  # a knob-column conflict fails the import, not a sweep's first write
