"""End-to-end sweeps on a real local Ray cluster, with real Optuna, Hydra and Parquet.

Kept few and small: imported (bring-your-own) features, so no backbone is trained here
(tests/test_backbone_ray.py covers the Ray Train job).
"""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import numpy as np
import pytest

from explore.results.reader import read_rows
from explore.results.schema import required_columns
from explore.sweep.__main__ import main as sweep_main
from tests.support.synthetic import COUNTS, write_feature_dir

pytestmark = pytest.mark.ray

SMALL = ["num_samples=3", "repeats=2", "method.epochs=6", "search.max_concurrent_trials=2"]


def _read(uri: str):
    return read_rows(uri).rows


def _results_uri(out: str) -> str:
    last = out.strip().splitlines()[-1]
    assert last.startswith("results: "), out[-2000:]
    return last[len("results: "):]


def test_sweep_on_imported_features(ray_cluster, tmp_path, capsys):
    feats = write_feature_dir(tmp_path / "feats")
    store = tmp_path / "store"
    assert sweep_main(["alphanet_k", f"features={feats}", f"storage_uri={store}", *SMALL]) == 0
    out = capsys.readouterr().out
    uri = _results_uri(out)
    df = _read(uri)

    assert set(required_columns()) <= set(df.columns)
    method_rows = df[df.method == "alphanet"]
    base_rows = df[df.method == "crt"]
    # the reference: the one cRT model AlphaNet corrects, a row per seed (paired)
    assert len(method_rows) == 3 * 2 and sorted(base_rows.seed) == [0, 1]
    assert (base_rows.role == "reference").all() and base_rows.deterministic.all()
    assert base_rows.acc_overall.nunique() == 1
    assert (method_rows.base == "crt").all() and base_rows.base.isna().all()
    assert (method_rows.base_key == base_rows.base_key.iloc[0]).all()
    assert method_rows.trial_id.nunique() == 3
    configs = method_rows.groupby(["k", "distance"]).trial_id.nunique()
    assert (configs == 1).all(), "a configuration was proposed twice"
    for _, group in method_rows.groupby("trial_id"):
        assert sorted(group.seed) == [0, 1]
        assert group.k.nunique() == 1 and group.distance.nunique() == 1
    num_base = sum(c >= 20 for c in COUNTS)
    assert method_rows.k.between(2, num_base).all()  # the 2..10 range was capped to the base classes
    assert set(method_rows.distance) <= {"euclidean", "cosine"}
    assert (method_rows.rho == 0.5).all()  # a knob that was not swept is still recorded
    for col in ("acc_many", "acc_medium", "acc_few", "acc_overall", "top5_overall", "val_acc_overall"):
        assert df[col].between(0, 1).all(), col
    assert (df.status == "ok").all() and (df.dataset == "imported").all()
    assert "few" in out and "overall" in out  # the closing summary was printed
    assert method_rows.k.dtype.name == "Int64"  # an integer knob reads back as an integer
    assert (method_rows.device == "cpu").all()  # no GPU assigned: the heads trained on the CPU

    # A second sweep on the same features imports nothing again.
    entries = sorted(p.name for p in (store / "features").iterdir())
    # A space whose knobs are all pinned is one configuration (no search).
    assert sweep_main(["alphanet_k", f"features={feats}", f"storage_uri={store}", "space.k=3",
                       "space.distance=cosine", "num_samples=5", "repeats=2", "method.epochs=5"]) == 0
    pinned = _read(_results_uri(capsys.readouterr().out))
    pinned = pinned[pinned.method == "alphanet"]
    assert len(pinned) == 2 and set(pinned.k) == {3} and set(pinned.distance) == {"cosine"}

    # It also runs each configuration of a finite space once: 12 requested, 6×2 exist.
    assert sweep_main(["alphanet_k", f"features={feats}", f"storage_uri={store}", "num_samples=16",
                       "repeats=1", "method.epochs=5"]) == 0
    assert sorted(p.name for p in (store / "features").iterdir()) == entries
    assert len(list((store / "sweeps").iterdir())) == 3
    second = _read(_results_uri(capsys.readouterr().out))
    second = second[second.method == "alphanet"]
    assert len(second) == (num_base - 1) * 2 and not second.duplicated(["k", "distance"]).any()


@pytest.mark.s3
def test_sweep_on_s3_storage_with_a_given_classifier(ray_cluster, s3_bucket, tmp_path, capsys):
    local = write_feature_dir(tmp_path / "feats", classifier=True)
    s3 = boto3.client("s3")
    for f in local.iterdir():
        s3.upload_file(str(f), s3_bucket, f"byo/{f.name}")
    assert sweep_main(["alphanet_k", f"features=s3://{s3_bucket}/byo",
                       f"storage_uri=s3://{s3_bucket}/explore", *SMALL]) == 0
    captured = capsys.readouterr()
    uri = _results_uri(captured.out)
    assert uri == f"s3://{s3_bucket}/explore/sweeps/" + uri.split("/sweeps/")[1]
    df = _read(uri)
    assert set(df.method) == {"alphanet", "given"}
    assert (df[df.method == "alphanet"].base == "given").all()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="explore/")["Contents"]]
    assert any(k.endswith("manifest.json") for k in keys)  # features cached in the bucket
    assert any(k.endswith("/optuna.journal") for k in keys)  # the study, mirrored to the bucket
    # the base row evaluates the given classifier, not a re-trained one
    x, y = np.load(local / "test.npz")["features"], np.load(local / "test.npz")["labels"]
    clf = np.load(local / "classifier.npz")
    acc = float(((x @ clf["weight"].T + clf["bias"]).argmax(1) == y).mean())
    given = df[df.method == "given"]
    assert len(given) == 2 and given.deterministic.all()  # one row per seed, the same model
    assert (abs(given.acc_overall - acc) < 1e-6).all()

    # No credential anywhere: printed output, every object the sweep stored (Parquet,
    # sweep config, Tune state, manifests), the local Optuna journal and Ray's logs.
    secrets = [os.environ["AWS_SECRET_ACCESS_KEY"], os.environ["AWS_ACCESS_KEY_ID"]]
    texts = [captured.out, captured.err]
    texts += [s3.get_object(Bucket=s3_bucket, Key=k)["Body"].read().decode("latin-1") for k in keys]
    for root in (Path(os.environ["RAY_TMPDIR"]), Path.home() / ".cache" / "explore"):
        texts += [p.read_text("latin-1") for p in root.rglob("*") if p.is_file() and p.stat().st_size < 5e6
                  and p.suffix in (".log", ".out", ".err", ".json", ".journal", ".txt", "")]
    for secret in secrets:
        assert not any(secret in t for t in texts), "a credential leaked"


def test_bad_inputs_end_with_one_line_and_damage_nothing(ray_cluster, tmp_path, capsys):
    feats = write_feature_dir(tmp_path / "feats")
    store = tmp_path / "store"
    assert sweep_main(["alphanet_k", f"features={feats}", f"storage_uri={store}", "num_samples=1",
                       "repeats=1", "method.epochs=5"]) == 0
    before = sorted(str(p) for p in store.rglob("*") if p.is_file())
    capsys.readouterr()
    cases = [
        (["alphanet_k", "space.k=8"], "k=8 is larger than the 6 base"),
        (["alphanet_k", "method.rho=0"], "rho"),
        (["alphanet_nope"], "unknown search space"),
    ]
    for argv, message in cases:
        rc = sweep_main([*argv, f"features={feats}", f"storage_uri={store}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and message in err[0], (argv, err)
    # mismatched features: labels of another length
    bad = write_feature_dir(tmp_path / "bad")
    np.savez(bad / "val.npz", features=np.zeros((5, 16), np.float32), labels=np.zeros(4, np.int64))
    rc = sweep_main(["alphanet_k", f"features={bad}", f"storage_uri={store}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "val.npz" in err[0], err
    after = sorted(str(p) for p in store.rglob("*") if p.is_file())
    assert after == before


@pytest.mark.parametrize("objective", ["pareto", "few_within"])
def test_split_aware_objectives_run_end_to_end(ray_cluster, tmp_path, capsys, objective):
    import optuna

    from explore.sweep.search import CONSTRAINT, journal_storage

    feats = write_feature_dir(tmp_path / "feats")
    store = tmp_path / "store"
    assert sweep_main(["alphanet_k", f"features={feats}", f"storage_uri={store}", "num_samples=3",
                       "repeats=1", "method.epochs=5", f"search.objective={objective}"]) == 0
    uri = _results_uri(capsys.readouterr().out)
    sweep_dir = Path(uri).parent
    study = optuna.load_study(study_name=sweep_dir.name,
                              storage=journal_storage(str(sweep_dir / "optuna.journal")))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    rows = _read(uri)
    if objective == "pareto":
        assert len(study.directions) == 2
        by_trial = rows[rows.role == "configuration"].set_index("trial_id")
        for t in complete:  # the study's two values are the rows' validation few and overall
            row = by_trial.loc[t.user_attrs["trial_id"]]
            assert t.values == [pytest.approx(row.val_acc_few), pytest.approx(row.val_acc_overall)]
    else:
        reference = rows[rows.role == "reference"].val_acc_overall.mean()
        for t in complete:
            assert t.constraints[CONSTRAINT] == pytest.approx(
                reference - 0.01 - t.user_attrs["val_acc_overall"])
