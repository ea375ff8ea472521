"""The auxiliary (open-set) pool as the feature split "aux": extracted with the sweep's
backbone (pipeline) or imported from aux.npz / aux_classes.txt, and read by the head-mode
neighbor-silencing trainer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from explore.backbone.models import ModelSpec, to_tensor
from explore.data.types import ImageSplit, LongTailDataset
from explore.pipeline import BackboneRun, _extract
from explore.splits import SplitThresholds
from explore.store import FeatureImportError, FeatureStore, import_feature_dir, imported_feature_key

D = 6


def _images(labels: list[int], seed: int) -> ImageSplit:
    rng = np.random.default_rng(seed)
    y = np.asarray(labels, dtype=np.int64)
    x = (rng.integers(0, 60, (len(y), 28, 28)) + 50 * y[:, None, None]).astype(np.uint8)
    return ImageSplit(labels=y, images=x)


def test_extract_adds_the_aux_split_with_the_same_backbone(tmp_path):
    ds = LongTailDataset(
        "tiny_open", ("a", "b", "c"),
        train=_images([0] * 8 + [1] * 4 + [2] * 2, 0), val=_images([0, 1, 2], 1),
        test=_images([0, 1, 2, 2], 2), params={"name": "tiny_open", "v": 1},
        aux=_images([0, 0, 1, 1, 1], 3), aux_classes=("x", "y"),
    )
    spec = ModelSpec("small_cnn", 3)
    torch.manual_seed(0)
    state = {k: v.numpy() for k, v in spec.build().state_dict().items()}
    store = FeatureStore(str(tmp_path / "store"))
    cfg = SimpleNamespace(dataset=None)
    key, _ = _extract(cfg, store, BackboneRun("bb0", spec, None, ds), state)

    fset = store.read(key)
    assert sorted(fset.splits) == ["aux", "test", "train", "val"]
    assert fset.meta["aux_classes"] == ["x", "y"] and fset.classes == ("a", "b", "c")
    assert fset.splits["aux"].labels.tolist() == [0, 0, 1, 1, 1]
    model = spec.build()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model.eval()
    with torch.no_grad():  # the backbone's embedding of the aux images, computed directly
        expected = model.embed(to_tensor(ds.aux.images, spec.resolved_preprocess())).numpy()
    assert np.allclose(fset.splits["aux"].features, expected, atol=1e-5)

    # A dataset without aux keeps the three splits and no aux_classes.
    plain = LongTailDataset("tiny", ds.classes, ds.train, ds.val, ds.test, params={"name": "tiny"})
    fset2 = store.read(_extract(cfg, store, BackboneRun("bb1", spec, None, plain), state)[0])
    assert sorted(fset2.splits) == ["test", "train", "val"] and "aux_classes" not in fset2.meta


def _write(root: Path, aux: bool = True, aux_names: str | None = "Shirt\nCoat\n", **aux_kw) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, y in {"train": [0] * 30 + [1] * 12 + [2] * 25 + [3] * 5, "val": [0, 1, 2, 3] * 3,
                     "test": [0, 1, 2, 3] * 4}.items():
        y = np.array(y)
        np.savez(root / f"{split}.npz", features=rng.normal(size=(len(y), D)) + y[:, None], labels=y)
    (root / "classes.txt").write_text("T-shirt\nTrouser\nPullover\nSneaker\n")
    if aux:
        y = np.array(aux_kw.get("labels", [0] * 10 + [1] * 8))
        x = aux_kw.get("features", rng.normal(size=(len(y), D)) + 0.5)
        np.savez(root / "aux.npz", features=x, labels=y)
    if aux_names is not None:
        (root / "aux_classes.txt").write_text(aux_names)
    return root


def test_imported_aux_pool(tmp_path):
    fset, _ = import_feature_dir(str(_write(tmp_path / "a")))
    assert fset.meta["aux_classes"] == ["Shirt", "Coat"]
    assert fset.splits["aux"].labels.tolist() == [0] * 10 + [1] * 8
    assert fset.splits["aux"].d == D
    # without aux_classes.txt the names are aux_0..; the key follows the aux files
    no_names = import_feature_dir(str(_write(tmp_path / "b", aux_names=None)))[0]
    assert no_names.meta["aux_classes"] == ["aux_0", "aux_1"]
    no_aux = _write(tmp_path / "c", aux=False, aux_names=None)
    assert "aux" not in import_feature_dir(str(no_aux))[0].splits
    keys = {imported_feature_key(str(tmp_path / n)) for n in ("a", "b", "c")}
    assert len(keys) == 3


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"aux": False}, "aux_classes.txt is given without aux.npz"),
        ({"aux_names": "Shirt\nTrouser\n"}, "also target classes"),
        ({"aux_names": "Shirt\n"}, r"labels must lie in \[0, 1\)"),
        ({"features": np.zeros((18, D + 1))}, f"N×{D}"),
        ({"labels": [0] * 17, "features": np.zeros((18, D))}, "one label per feature row"),
        ({"aux_names": "a\nb\nc\nd\ne\n", "labels": [4] * 18}, "at most as many auxiliary classes"),
    ],
)
def test_bad_aux_files_give_one_line_errors(tmp_path, kw, message):
    root = _write(tmp_path / "bad", **kw)
    with pytest.raises(FeatureImportError, match=message) as info:
        import_feature_dir(str(root))
    assert "\n" not in str(info.value)


def test_head_mode_neighbor_silencing_reads_the_imported_pool(tmp_path):
    from explore.recipes import get_recipe
    from explore.training.head_config import HeadTrainConfig
    from explore.training.inputs import TrialInputs

    fset, _ = import_feature_dir(str(_write(tmp_path / "a")))
    recipe = get_recipe("neighbor_silencing")
    params = recipe.params({"neighbor_source": "prototype", "aux_base_count": 1})
    inputs = TrialInputs(fset, None, SplitThresholds(many_above=20, few_below=10), HeadTrainConfig(epochs=2))
    fit = recipe.fit_head(inputs, params, [0])
    assert 0 <= fit.results[0].test["acc_overall"] <= 1
    assert set(fit.resolved["aux_classes"]) <= {"Shirt", "Coat"}
