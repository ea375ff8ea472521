"""One small real board, end to end: imported features, S3 storage (moto), a real local
Ray cluster, real Tune + Optuna sweeps. One run is shared by every assertion (it is the
slow part); the resume reuses it.

The board: the base ``ce``, ``alphanet_k`` (a post-hoc method with a searched space, so
its base is trained per fresh seed), and ``ns_lambda`` (neighbor silencing, which cannot
run on features without an auxiliary pool).
"""

from __future__ import annotations

import boto3
import numpy as np
import pyarrow.fs as pafs
import pytest

from explore.analyze.board import board_rows, choose, load_board_data, markdown
from explore.board.__main__ import main as board_main
from explore.results.reader import read_rows
from explore.store import uri as storage
from tests.support.synthetic import write_feature_dir

pytestmark = [pytest.mark.ray, pytest.mark.s3]

TUNING_SEEDS = {0, 1}
FRESH_SEEDS = [1000, 1001]


@pytest.fixture(scope="module")
def board(ray_cluster, s3_endpoint, tmp_path_factory):
    """(board uri, printed output) of one finished board."""
    feats = write_feature_dir(tmp_path_factory.mktemp("board") / "feats")
    bucket = f"board-{np.random.default_rng().integers(1 << 30)}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    argv = ["fashion_mnist", "entries=[ce,alphanet_k,ns_lambda]", "budget.configurations=3",
            "budget.seeds=2", "final_seeds=2", f"features={feats}",
            f"storage_uri=s3://{bucket}/explore"]
    out = _run(argv)
    uri = out.strip().splitlines()[-1].removeprefix("board: ")
    return uri, out, argv


def _run(argv: list[str]) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert board_main(argv) == 0
    return buf.getvalue()


def _rows(uri: str, entry: str, phase: str):
    data = load_board_data(uri)
    frame = (data.tuning if phase == "tune" else data.final)[entry]
    assert (frame["phase"] == phase).all() and (frame["board_id"] == data.board["board_id"]).all()
    return frame


def test_reported_seeds_are_fresh_and_every_delta_is_paired(board):
    uri, out, _ = board
    assert uri.startswith("s3://") and "Δ few" in out and "ce" in out
    data = load_board_data(uri)
    base = _rows(uri, "ce", "final")
    base = base[base.role == "configuration"].set_index("seed")
    for entry in ("ce", "alphanet_k"):
        tuning = _rows(uri, entry, "tune")
        final = _rows(uri, entry, "final")
        assert set(tuning.seed) == TUNING_SEEDS
        assert sorted(final[final.role == "configuration"].seed) == FRESH_SEEDS
        assert set(final.seed).isdisjoint(set(tuning.seed))
    alpha = _rows(uri, "alphanet_k", "final")
    configs = alpha[alpha.role == "configuration"].set_index("seed")
    refs = alpha[alpha.role == "reference"].set_index("seed")
    # the post-hoc method corrects the base trained on each fresh seed, and its reference
    # rows are that base on that seed
    assert sorted(refs.index) == FRESH_SEEDS and (refs.method == "crt").all()
    for seed in FRESH_SEEDS:
        assert configs.loc[seed, "base_key"] == refs.loc[seed, "base_key"]
    assert configs.base_key.nunique() == len(FRESH_SEEDS)
    row = next(r for r in board_rows(data) if r.entry == "alphanet_k")
    for split, col in (("few", "acc_few"), ("overall", "acc_overall")):
        by_hand = 100 * (configs.loc[FRESH_SEEDS, col] - base.loc[FRESH_SEEDS, col])
        assert row.deltas[split].n == len(FRESH_SEEDS)
        assert row.deltas[split].mean == pytest.approx(by_hand.mean())


def test_the_chosen_configuration_is_the_rules_pick_on_validation(board):
    uri, _, _ = board
    data = load_board_data(uri)
    tuning = _rows(uri, "alphanet_k", "tune")
    ok = tuning[(tuning.role == "configuration") & (tuning.status == "ok")]
    assert ok.trial_id.nunique() == 3  # the budget: 3 configurations × 2 seeds
    best_val = ok.groupby("trial_id").val_acc_overall.mean().idxmax()
    outcome = data.outcomes["alphanet_k"]
    assert outcome["trial_id"] == best_val == choose(tuning, "val_overall", 1.0).trial_id  # type: ignore[union-attr]
    chosen = ok[ok.trial_id == best_val].iloc[0]
    final = _rows(uri, "alphanet_k", "final")
    final = final[final.role == "configuration"]
    assert (final.k == chosen.k).all() and (final.distance == chosen.distance).all()
    row = next(r for r in board_rows(data) if r.entry == "alphanet_k")
    assert (row.used, row.given, row.tuning_seeds) == (3, 3, 2)


def test_a_method_that_cannot_run_stands_with_its_reason(board):
    uri, out, _ = board
    rows = board_rows(load_board_data(uri))
    assert [r.entry for r in rows][0] == "ce" and rows[0].status == "base"
    ns = next(r for r in rows if r.entry == "ns_lambda")
    assert ns.status == "cannot run" and "auxiliary pool" in ns.reason
    assert "ns_lambda: cannot run: " in out


def test_a_killed_board_resumes_to_the_same_table(board, tmp_path, capsys):
    """What a kill during the final phase leaves: an entry's outcome not recorded, a
    fresh seed's rows not written, no table. The resume runs only those."""
    uri, _, argv = board
    before = markdown(load_board_data(uri), board_rows(load_board_data(uri)))
    data = load_board_data(uri)
    board_id = data.board["board_id"]
    sweeps = {e["name"]: e for e in data.board["entries"]}
    fs, _ = storage.resolve(uri)
    tuning_results = storage.join(data.board["storage_uri"], "sweeps",
                                  sweeps["alphanet_k"]["sweep_id"], "results")

    def names(results: str) -> set[str]:
        path = storage.resolve(results)[1]
        return {i.base_name for i in fs.get_file_info(pafs.FileSelector(path))}

    tuned = names(tuning_results)
    final_results = storage.join(data.board["storage_uri"], "sweeps",
                                 sweeps["alphanet_k"]["final_id"], "results")
    for doomed in (storage.join(uri, "entries", "alphanet_k.json"),
                   storage.join(uri, "entries", "ns_lambda.json"),
                   storage.join(final_results, "trial-final-s1001.parquet"),
                   storage.join(uri, "table.md")):
        fs.delete_file(storage.resolve(doomed)[1])
    assert "trial-final-s1001.parquet" not in names(final_results)
    out = _run([*argv, f"resume={board_id}"])
    assert names(tuning_results) == tuned  # no tuning trial ran again
    assert "trial-final-s1001.parquet" in names(final_results)
    after = load_board_data(uri)
    assert markdown(after, board_rows(after)) == before
    assert board_id in out

    # python -m explore.analyze opens the board and prints the same table
    from explore.analyze.__main__ import main as analyze_main

    capsys.readouterr()
    assert analyze_main([uri, "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert out.split("Board ", 1)[1].split("\nboard: ")[0].strip() in printed
    assert (tmp_path / "a" / "table.md").read_text() == before
    assert read_rows([final_results]).rows.seed.isin(FRESH_SEEDS).all()
