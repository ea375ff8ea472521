"""A sweep's driver never trains on the hot path, so it must not pay for importing torch
(~1.5 s): on cached features, everything the driver runs before and after the trials —
the CLI module, the config, ``prepare`` on a cache hit, the plan, the reference rows,
the closing summary, and the modules that hand trials to Ray — imports no torch.

Each step runs in a fresh interpreter (this test process has torch loaded already). The
first ``prepare`` fills the store (it trains the base classifier, so it imports torch);
the second process is the driver's path on the warm store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.synthetic import write_feature_dir

REPO = Path(__file__).resolve().parent.parent

_SETUP = """
import json
import sys
from explore.config import compose, sweep_config
from explore.pipeline import prepare
from explore.recipes import get_recipe
from explore.store import FeatureStore

def metrics(prepared):
    return json.dumps([[r.seed, r.test, r.val] for r in prepared.reference.results],
                      sort_keys=True, default=float)

spaces = json.loads(sys.argv[1])
"""

_FILL = _SETUP + """
for name, *args in spaces:
    cfg = sweep_config(compose(name, args), name)
    print("METRICS", name, metrics(prepare(cfg, get_recipe(cfg.method), FeatureStore(cfg.storage_uri))))
"""

# The steps of explore.sweep.driver.run on a warm store, without Ray (the trials run on
# Ray workers, which import torch themselves).
_DRIVER = """
import explore.sweep.__main__  # the CLI module first, as `python -m explore.sweep` does
""" + _SETUP + """
import dataclasses

from explore.results import writer
from explore.results.layout import SweepLayout
from explore.results.rows import Provenance, build_row
from explore.sweep import driver, resume
from explore.sweep.plan import DataSummary, plan_sweep

for name, *args in spaces[1:]:  # prepare alone (a base recipe's cached reference)
    other = sweep_config(compose(name, args), name)
    print("METRICS", name, metrics(prepare(other, get_recipe(other.method),
                                           FeatureStore(other.storage_uri))))

name, *args = spaces[0]
cfg = sweep_config(compose(name, args), name)
recipe = get_recipe(cfg.method)
layout, resuming = resume.locate(cfg, None)
store = FeatureStore(layout.storage_uri)
prepared = prepare(cfg, recipe, store)
print("METRICS", name, metrics(prepared))
reference = prepared.reference
sweep = plan_sweep(cfg, recipe, layout, resuming, DataSummary(
    prepared.dataset_name, prepared.facts, bool(reference.results[0].val), reference.name))
prov = Provenance(
    sweep_id=layout.sweep_id, space=cfg.space_name, mode=cfg.mode,
    dataset=prepared.dataset_name, feature_key=prepared.feature_key, thresholds=cfg.splits,
    code_version=driver.code_version(), base=reference.name, base_key=prepared.base_key)
ctx = driver.trial_context(sweep, prov)
name = SweepLayout.base_name(reference.name)
rows = [build_row(dataclasses.replace(prov, mode="head", base_key=key), trial_id=name,
                  method=reference.name, role="reference", result=result, knobs={},
                  training=ctx.head, deterministic=reference.deterministic)
        for result, key in zip(reference.results, reference.keys, strict=True)]
writer.write_rows(ctx.layout, name, rows)

import explore.analyze  # noqa: F401
import explore.sweep.tuning  # noqa: F401
import explore.sweep.workers  # noqa: F401

driver.close(layout)
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("TORCH_MODULES", len(loaded), loaded[:5])
"""


def _run(script: str, spaces: list[list[str]], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(tmp_path / "home"), "RAY_TMPDIR": str(tmp_path / "ray")}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), json.dumps(spaces)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


def test_the_driver_path_on_cached_features_imports_no_torch(tmp_path):
    feats = write_feature_dir(tmp_path / "feats", classifier=True)
    common = [f"features={feats}", f"storage_uri={tmp_path / 'store'}", "repeats=2",
              "head.epochs=2"]
    # a post-hoc method on the given classifier; a training-time one on a cached base (cRT)
    spaces = [["alphanet_k", *common], ["swrm_window", *common, "base=crt"]]
    fill = _run(_FILL, spaces, tmp_path)
    assert fill.returncode == 0, fill.stderr

    done = _run(_DRIVER, spaces, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "TORCH_MODULES 0 []" in done.stdout, done.stdout
    # the warm store's reference metrics are the ones computed when it was filled
    computed = sorted(line for line in fill.stdout.splitlines() if line.startswith("METRICS"))
    read = sorted(line for line in done.stdout.splitlines() if line.startswith("METRICS"))
    assert len(computed) == 2 and read == computed
