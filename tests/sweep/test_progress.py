"""Progress: rounded knobs, bars in a terminal, plain lines at a bounded rate elsewhere,
the sweep's trial lines, and the backbone's epochs streamed from Ray Train workers."""

from __future__ import annotations

import io
import pickle
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from explore import console as progress
from explore.backbone import BackboneTrainConfig, ModelSpec, extract_features, train_backbone
from explore.console import EpochProgress, Progress, fmt_knobs, fmt_value
from explore.sweep.progress import ProgressReporter
from tests.backbone.images import bars, fresh_cnn


class Clock:
    """A hand-driven ``time`` for the module under test (its own binding only)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(progress, "time", c)
    return c


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_values_print_to_four_significant_digits():
    assert fmt_value(1.0976270078546495) == "1.098"
    assert fmt_value(0.000123456) == "0.0001235"
    assert fmt_value(123456.7) == "1.235e+05"
    assert fmt_value(0.05) == "0.05" and fmt_value(2.0) == "2"
    assert fmt_value(5) == "5" and fmt_value(np.int64(5)) == "5"
    assert fmt_value(np.float32(0.1)) == "0.1"
    assert fmt_value(True) == "True" and fmt_value("cosine") == "cosine"
    assert fmt_knobs({"tau": 0.05, "alpha": 1.0976270078546495}) == "alpha=1.098, tau=0.05"


def test_plain_lines_come_at_a_bounded_rate_with_time_left(clock):
    out = io.StringIO()
    bar = Progress("step", 100, "it", stream=out, interval=10)
    for n in range(1, 11):  # ten updates within a second: nothing yet
        clock.now += 0.1
        bar.set(n)
    assert out.getvalue() == ""
    clock.now = 1002.0
    bar.set(20, important=True)  # a line that matters, 2 s in: printed
    clock.now = 1002.5
    bar.set(21, important=True)  # another within a second: held back
    clock.now = 1012.1
    bar.set(30)  # the interval passed: a status line
    clock.now = 1013.0
    bar.set(40)
    bar.close()
    # time left at the rate since the start: 80 × 2 s / 20 = 8 s; 70 × 12.1 s / 30 = 28.2 s
    assert out.getvalue().splitlines() == [
        "step: 20/100 it (20%)  [00:02 elapsed, ~00:08 left]",
        "step: 30/100 it (30%)  [00:12 elapsed, ~00:28 left]",
        "step: 40/100 it (40%)  [00:13 elapsed]",
    ]


def test_a_silent_step_still_shows_it_is_alive():
    out = io.StringIO()
    with Progress("base crt", tick=True, stream=out, interval=0.2) as bar:
        bar.note("5 seeds")
        import time

        time.sleep(1.6)  # the ticker looks once a second
    lines = out.getvalue().splitlines()
    assert len(lines) >= 1 and all(line.startswith("base crt: 5 seeds  [00:0") for line in lines)


def test_terminal_gets_a_redrawn_bar_and_lines_above_it(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    term = Terminal()
    with Progress("features: extract", 50, "img", stream=term) as bar:
        bar.update(20)
        bar.write("[explore] a line above the bar")
        bar.update(30)
        bar.note("train/val/test")
    text = term.getvalue()
    assert "\r" in text and "50/50" in text and "train/val/test" in text
    assert "[explore] a line above the bar\n" in text


def test_backbone_epochs_show_counts_loss_and_accuracy(clock, capsys, monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "1000")
    bar = EpochProgress("backbone small_cnn", epochs=3, workers=2)
    clock.now += 1
    bar({"kind": "batch", "epoch": 0, "batch": 5, "batches": 18})
    clock.now += 2
    bar({"kind": "epoch", "epoch": 0, "train_loss": 1.29714, "val_acc": 0.1357})
    clock.now += 2
    bar({"kind": "batch", "epoch": 1, "batch": 9, "batches": 18})
    clock.now += 2
    bar({"kind": "epoch", "epoch": 1, "train_loss": 0.7, "val_acc": 0.378})
    bar.close()
    # the rate counts from the first batch (after the workers started): 36 × 2 s / 18 = 4 s
    assert capsys.readouterr().out.splitlines() == [
        "backbone small_cnn: 18/54 batch (33%)  epoch 1/3 done · loss 1.2971 val_acc 0.136  "
        "[00:03 elapsed, ~00:04 left]",
        "backbone small_cnn: 36/54 batch (67%)  epoch 2/3 done · loss 0.7000 val_acc 0.378  "
        "[00:07 elapsed, ~00:03 left]",
    ]


class Counter:
    """An ``on_trial_end`` that pickles (a lambda would not)."""

    calls = 0

    def __call__(self) -> None:
        self.calls += 1


def _trial(trial_id: str, value: float, **config: Any) -> SimpleNamespace:
    result = {"val_acc_overall": value, "acc_few": value / 2, "acc_overall": value,
              "num_seeds": 2.0, "trial_seconds": 1.25}
    return SimpleNamespace(trial_id=trial_id, config=config, last_result=result,
                           status="TERMINATED")


def test_sweep_lines_round_knobs_and_track_the_best(clock, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "1000")
    reporter = ProgressReporter(5, "val_acc_overall")
    values = [0.5, 0.4, 0.3, 0.6, 0.2]
    for i, value in enumerate(values):
        clock.now += 0.2  # five trials within a second
        trial = _trial(f"t{i}", value, alpha=1.0976270078546495 + i, tau=0.05)
        reporter.on_step_begin(0, [trial, SimpleNamespace(status="RUNNING")])
        reporter.on_trial_complete(0, [], trial)
    pickle.dumps(reporter)  # Tune pickles its callbacks with the experiment state
    reporter.close()
    lines = capsys.readouterr().out.splitlines()
    # plain output: a trial line at most once a second, except a new best and the last
    assert [line.split("]")[0] + "]" for line in lines[:-1]] == ["[1/5]", "[4/5]", "[5/5]"]
    assert lines[0].startswith("[1/5] alpha=1.098, tau=0.05: val_acc_overall 0.5000  few 0.2500"
                               "  overall 0.5000  (2 seeds in 1.2 s, 00:00 elapsed")
    assert lines[0].endswith("best so far") and lines[1].endswith("best so far")
    assert lines[1].startswith("[4/5] alpha=4.098, tau=0.05: val_acc_overall 0.6000")
    assert not lines[2].endswith("best so far")
    assert lines[-1] == ("sweep: 5/5 trial (100%)  0 running · best val_acc_overall 0.6000 "
                         "(alpha=4.098, tau=0.05)  [00:00 elapsed]")


def test_train_loop_reports_every_step_and_extraction_counts_images():
    torch.set_num_threads(1)
    calls: list[tuple[int, int, int]] = []
    cfg = BackboneTrainConfig(epochs=2, batch_size=16)
    train_backbone(fresh_cnn(), bars(40, 0), None, cfg,
                   on_batch=lambda e, done, total: calls.append((e, done, total)))
    # 40 samples in batches of 16: 16, 16, 8 → three steps per epoch
    assert calls == [(0, 1, 3), (0, 2, 3), (0, 3, 3), (1, 1, 3), (1, 2, 3), (1, 3, 3)]
    done: list[int] = []
    extract_features(fresh_cnn(), bars(23, 1), batch_size=10, progress=done.append)
    assert done == [10, 10, 3]


@pytest.mark.ray
def test_backbone_job_streams_rank_zeros_epochs_to_the_driver(ray_cluster, tmp_path):
    from explore.backbone.ray_job import run_backbone_job

    messages: list[dict[str, Any]] = []
    cfg = BackboneTrainConfig(epochs=2, batch_size=16, num_workers=1)
    _, metrics = run_backbone_job(ModelSpec("small_cnn", 2), bars(48, 0), bars(20, 1), cfg, None,
                                  str(tmp_path), run_name="progress", progress=messages.append)
    epochs = [m for m in messages if m["kind"] == "epoch"]
    assert [m["epoch"] for m in epochs] == [0, 1]
    assert epochs[-1]["train_loss"] == pytest.approx(metrics["train_loss"])
    assert epochs[-1]["val_acc"] == pytest.approx(metrics["val_acc"])
    for m in messages:
        if m["kind"] == "batch":  # within-epoch messages, if an epoch lasted over a second
            assert 1 <= m["batch"] < m["batches"] == 3
