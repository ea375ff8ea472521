"""The GPU check (``python -m benchmarks --only gpu``) at smoke size on the CPU, so that the
script cannot rot; and, on a CUDA machine, extraction on the GPU against the CPU.

No timing assertions: speed is measured by ``python -m benchmarks``, not here."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from benchmarks import __main__ as cli
from tests.support.torch_threads import one_torch_thread


def test_gpu_check_runs_at_smoke_size_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    with one_torch_thread():
        assert cli.main(["--only", "gpu", "--device", "cpu", "--threads", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "9. GPU check on cpu (smoke sizes)" in printed
    figures = {f["name"]: f for f in json.loads(out.read_text())["figures"]}
    for method in ("swrm", "dyswrm", "neighbor_silencing"):  # lfm needs a text encoder: may say "not run"
        fig = figures[f"{method}: s per epoch per seed"]
        assert fig["value"] > 0 and fig["note"].startswith("on cpu")
    for name in ("device's matrix-product floor, s per epoch", "ratio to the device's floor",
                 "2 seeds stacked vs one at a time (the method itself)",
                 "4 trials packed on one device vs one at a time", "extraction, ResNet-32 at 32×32",
                 "full-mode ResNet-32 epoch, AMP off"):
        assert math.isfinite(figures[name]["value"]) and figures[name]["value"] > 0, name
    # What did not run says why, instead of a number.
    assert figures["full-mode ResNet-32 epoch, AMP on: not run"]["value"] is None
    assert "CUDA-only" in figures["full-mode ResNet-32 epoch, AMP on: not run"]["note"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_extraction_on_cuda_matches_the_cpu_within_tolerance(tmp_path):
    """The shards a GPU worker writes hold the CPU's features up to float rounding (cuDNN
    picks other algorithms: equal bit for bit only on the CPU)."""
    from explore.backbone import ModelSpec
    from explore.backbone.extract_job import extract_to_store
    from explore.store import FeatureStore
    from tests.backbone.images import bars

    spec = ModelSpec("small_cnn", 2, 1)
    torch.manual_seed(0)
    state = {k: v.numpy() for k, v in spec.build().state_dict().items()}
    splits = {"train": bars(40, 0), "val": bars(8, 1), "test": bars(20, 2)}
    got = {}
    for device_gpu in (False, True):
        store = FeatureStore(str(tmp_path / str(device_gpu)), max_rows_per_shard=16)
        got[device_gpu] = extract_to_store(store, "k", splits, spec, state, ("h", "v"), {}, batch_size=8,
                                           use_gpu=device_gpu)
    for name in splits:
        np.testing.assert_allclose(got[True].splits[name].features, got[False].splits[name].features,
                                   rtol=1e-4, atol=1e-4)
