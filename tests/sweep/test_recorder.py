"""The trial-end hook on its own, as Optuna tests its pruners: synthetic trial events in,
result files out; no Ray, no training."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest

from explore.results import writer
from explore.results.layout import SweepLayout
from explore.results.rows import Provenance, build_row
from explore.splits import SplitThresholds
from explore.sweep.context import HeadTrialContext
from explore.sweep.recorder import RowRecorder
from explore.sweep.reports import STORAGE_ERROR, EpochReports, final_report, summarize_rows
from explore.training.head_config import HeadTrainConfig
from explore.training.outcome import SeedResult

SEEDS = (3, 4)


class Ends:
    """An ``on_trial_end`` that counts (and pickles, as Tune's callbacks must)."""

    calls = 0

    def __call__(self) -> None:
        self.calls += 1


@pytest.fixture
def ctx(tmp_path) -> HeadTrialContext:
    prov = Provenance(sweep_id="s", space="swrm_window", mode="head", dataset="synthetic",
                      feature_key="f", thresholds=SplitThresholds(), code_version="v", base="ce")
    return HeadTrialContext(layout=SweepLayout(str(tmp_path), "s"), provenance=prov,
                            method="swrm", method_settings={}, head=HeadTrainConfig(),
                            seeds=SEEDS)


def _rows(ctx: HeadTrialContext, trial_id: str, W: int, acc: float) -> list[dict[str, Any]]:
    return [build_row(ctx.provenance, trial_id=trial_id, method="swrm", role="configuration",
                      result=SeedResult(seed=s, best_epoch=2, test={"acc_overall": acc + s},
                                        val={"acc_overall": acc}), knobs={"W": W})
            for s in SEEDS]


def _trial(trial_id: str, last: dict[str, Any] | None = None, error_file: str = "",
           **config: Any) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config=config, last_result=last or {},
                           error_file=error_file)


def _names(ctx: HeadTrialContext) -> set[str]:
    return writer.existing_names(ctx.layout)


def test_a_finished_trial_is_written_once_and_its_stale_error_rows_go(ctx):
    ends = Ends()
    recorder = RowRecorder(ctx, on_trial_end=ends)
    stale = SweepLayout.error_name({"W": 3})
    writer.write_rows(ctx.layout, stale, _rows(ctx, "old", 3, 0.0))  # a failed earlier run
    report = final_report(_rows(ctx, "t1", 3, 0.25), 2.0)
    trial = _trial("t1", report, W=3)
    recorder.on_trial_result(0, [], trial, {**summarize_rows([]), "epoch": 1})  # not final
    assert _names(ctx) == {stale}
    recorder.on_trial_result(0, [], trial, report)
    recorder.on_trial_complete(0, [], trial)
    assert _names(ctx) == {"trial-t1"}
    written = writer.read_file(ctx.layout, "trial-t1")
    assert written["seed"].tolist() == list(SEEDS)
    assert written["acc_overall"].tolist() == [3.25, 4.25]
    assert (written["status"] == "ok").all() and written["W"].tolist() == [3, 3]
    assert ends.calls == 1 and recorder.ended == 1 and recorder.storage_errors == []


def test_a_failed_trial_gets_error_rows_with_its_last_error_line_redacted(ctx, tmp_path):
    error_file = tmp_path / "error.txt"
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "explore-test-secret-do-not-log")
    os.environ["AWS_SECRET_ACCESS_KEY"] = secret
    error_file.write_text(f"Traceback ...\n\nValueError: W=99 is larger than C (key {secret})\n")
    ends = Ends()
    RowRecorder(ctx, on_trial_end=ends).on_trial_error(
        0, [], _trial("t2", error_file=str(error_file), W=99))
    name = SweepLayout.error_name({"W": 99})
    rows = writer.read_file(ctx.layout, name)
    assert rows["status"].tolist() == ["error", "error"] and rows["W"].tolist() == [99, 99]
    assert rows["error"].iloc[0].startswith("ValueError: W=99 is larger than C")
    assert secret not in rows["error"].iloc[0]
    assert "acc_overall" not in rows or rows["acc_overall"].isna().all()
    assert ends.calls == 1


def test_a_trial_lost_after_its_rows_were_written_keeps_them(ctx):
    recorder = RowRecorder(ctx)
    report = final_report(_rows(ctx, "t3", 4, 0.5), 1.0)
    recorder.on_trial_result(0, [], _trial("t3", report, W=4), report)
    recorder.on_trial_error(0, [], _trial("t3", report, W=4))
    assert _names(ctx) == {"trial-t3"}  # no error rows beside the finished ones


def test_a_stopped_trial_gets_stopped_rows_with_each_seeds_epochs(ctx):
    epochs = EpochReports(SEEDS, None)
    epochs.metrics(3, 4, 0.5)
    last = epochs.metrics(4, 1, 0.4, trained=5)
    RowRecorder(ctx).on_trial_complete(0, [], _trial("t4", last, W=5))
    rows = writer.read_file(ctx.layout, "trial-t4")
    assert list(zip(rows["seed"], rows["status"], rows["stopped_epoch"], strict=True)) == [
        (3, "stopped", 4), (4, "stopped", 1)]


def test_a_storage_failure_a_trial_reported_ends_the_sweep_and_is_recorded(ctx):
    recorder = RowRecorder(ctx)
    result = {**summarize_rows([]), STORAGE_ERROR: "writing results failed: No space left"}
    recorder.on_trial_complete(0, [], _trial("t5", result, W=6))
    assert recorder.storage_errors == ["writing results failed: No space left"]
    rows = writer.read_file(ctx.layout, SweepLayout.error_name({"W": 6}))
    assert rows["error"].tolist() == ["writing results failed: No space left"] * 2


def test_a_store_that_fails_is_logged_and_the_driver_stays_up(ctx, tmp_path, caplog):
    """A failure that is not permanent (here: ``results`` is a file) loses this trial's
    rows, says so, and a resume runs it again; nothing raises into Tune."""
    (tmp_path / "sweeps" / "s").mkdir(parents=True)
    (tmp_path / "sweeps" / "s" / "results").write_text("not a directory")
    report = final_report(_rows(ctx, "t6", 3, 0.1), 1.0)
    recorder = RowRecorder(ctx)
    recorder.on_trial_result(0, [], _trial("t6", report, W=3), report)
    assert recorder.storage_errors == []
    assert "could not record trial t6" in caplog.text and "a resume runs it again" in caplog.text


def test_a_configuration_that_cannot_run_is_recorded_once_not_as_a_storage_failure(ctx):
    """A deterministic error (the trial reports it instead of raising into Tune's
    retries) gives error rows with its message; the sweep goes on."""
    from explore.sweep.reports import TRIAL_ERROR

    recorder = RowRecorder(ctx)
    result = {**summarize_rows([]), TRIAL_ERROR: "neighbor_map /x/late.json does not exist"}
    recorder.on_trial_complete(0, [], _trial("t7", result, W=7))
    assert recorder.storage_errors == [] and recorder.ended == 1
    rows = writer.read_file(ctx.layout, SweepLayout.error_name({"W": 7}))
    assert rows["status"].tolist() == ["error", "error"]
    assert rows["error"].tolist() == ["neighbor_map /x/late.json does not exist"] * 2
