"""The command that reruns one configuration with more seeds.

``python -m explore.sweep <space> space.<knob>=<value> ... num_samples=1 repeats=10
<the sweep's own overrides> storage_uri=<root>``: every knob pinned to the configuration's
value (a bare value pins a knob), one sample, ten seeds, the overrides the sweep was started
with (from ``sweep.json``) except those the command sets itself (``num_samples``,
``repeats``, ``resume``, ``storage_uri`` and every ``space.*``), and the storage root where
the sweep's caches are, so its features and reference are reused.
"""

from __future__ import annotations

import re
import shlex

from explore.analyze.load import SweepMeta

RERUN_REPEATS = 10
_SET_HERE = frozenset({"num_samples", "repeats", "resume", "storage_uri"})
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./:]*")
_HYDRA_WORDS = frozenset({"true", "false", "null", "nan", "inf", "-inf"})


def override_key(override: str) -> str:
    """``space.k`` from ``+space.k=3`` / ``~space.k`` / ``space.k=3``."""
    return override.lstrip("+~").split("=", 1)[0].strip()


def _kept(override: str) -> bool:
    key = override_key(override)
    return key not in _SET_HERE and key != "space" and not key.startswith("space.")


def hydra_value(value: object) -> str:
    """A knob value as Hydra reads it back to the same type: ints and floats round-trip
    (``repr``), booleans as true/false, strings bare when Hydra would read them as the
    same string, else single-quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _HYDRA_WORDS:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def rerun_command(meta: SweepMeta, knobs: tuple[tuple[str, object], ...],
                  repeats: int = RERUN_REPEATS) -> str:
    """The shell command (one line, shell-quoted) that reruns ``knobs`` of ``meta``'s sweep."""
    space = meta.space_name or "<space>"
    parts = ["python", "-m", "explore.sweep", space]
    # A knob the space searched is pinned in the space; any other knob column (a setting of
    # the method the sweep held fixed) is a method setting.
    parts += [f"{'space' if meta.swept is None or name in meta.swept else 'method'}.{name}="
              f"{hydra_value(value)}" for name, value in knobs]
    parts += ["num_samples=1", f"repeats={repeats}"]
    parts += [o for o in meta.overrides or () if _kept(o)]
    parts.append(f"storage_uri={meta.storage_uri or '<storage_uri>'}")
    return " ".join(shlex.quote(p) for p in parts)
