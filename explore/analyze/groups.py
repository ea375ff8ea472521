"""Comparability groups: results that may be ranked against each other.

Two sweeps are comparable when they share the dataset, the cached features
(``feature_key``), the reference method, the mode and the split thresholds
(``many_above``, ``few_below``). Recommendations, Pareto fronts and plots are made per
group and never across groups.

The reference's own rows are always written in head mode (it is a head on cached
features); a group's mode is the mode of the configurations that use the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from explore.analyze.load import CONFIGURATION, REFERENCE, is_null

GROUP_FIELDS: tuple[str, ...] = (
    "dataset", "feature_key", "reference", "mode", "many_above", "few_below",
)


@dataclass(frozen=True)
class Group:
    number: int
    """1-based, in the order of the keys."""
    key: tuple[str, ...]
    """Values of :data:`GROUP_FIELDS`, as text."""
    sweeps: tuple[str, ...]

    def title(self) -> str:
        d = dict(zip(GROUP_FIELDS, self.key))
        return (f"dataset {d['dataset']}, features {d['feature_key']}, reference "
                f"{d['reference']}, mode {d['mode']}, many > {d['many_above']}, "
                f"few < {d['few_below']}")


def _text(value: object) -> str:
    if is_null(value):
        return "?"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _first(values: pd.Series) -> object:
    present = values.dropna()
    return present.iloc[0] if len(present) else None


def assign_groups(rows: pd.DataFrame) -> tuple[pd.Series, list[Group]]:
    """The group number of every row (by its sweep and reference method), and the groups.

    A unit is (sweep, reference method): the configurations whose ``base`` names it and the
    reference's own rows. Its key takes dataset, features and thresholds from its rows,
    configurations first, and the mode of its configurations (the reference's own mode when
    it has none)."""
    ref_name = rows["method"].where(rows["role"] == REFERENCE, rows["base"]).astype(object)
    ref_name = ref_name.where(ref_name.notna(), "?")
    units: dict[tuple[str, str], tuple[str, ...]] = {}
    for (sweep_id, ref), unit in rows.groupby([rows["sweep_id"], ref_name], sort=True,
                                              dropna=False):
        configs = unit[unit["role"] == CONFIGURATION]
        source = configs if not configs.empty else unit
        key = tuple(_text(v) for v in (
            _first(source["dataset"]), _first(source["feature_key"]), ref,
            _first(source["mode"]), _first(source["many_above"]), _first(source["few_below"]),
        ))
        units[(str(sweep_id), str(ref))] = key
    keys = sorted(set(units.values()))
    groups = [
        Group(i + 1, k, tuple(sorted({s for (s, _), uk in units.items() if uk == k})))
        for i, k in enumerate(keys)
    ]
    number = {k: g.number for k, g in zip(keys, groups)}
    per_row = pd.Series(
        [number[units[(str(s), str(r))]] for s, r in zip(rows["sweep_id"], ref_name)],
        index=rows.index, name="group", dtype=int,
    )
    return per_row, groups
