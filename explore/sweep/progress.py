"""What the driver shows while it works: a progress bar for every long step (backbone
training, feature extraction and import, base training, the sweep itself), one line per
finished trial, and the Tune callback that records failed trials.

In a terminal the bars are tqdm's. Anywhere else (CI, ``ray job logs``, a pipe) the same
information goes out as plain lines at a bounded rate: one status line per step at most
every ``EXPLORE_PROGRESS_SECONDS`` seconds (default 10), plus the lines that matter (an
epoch's end, a finished trial) at most one a second, plus each step's last line.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from ray.tune import Callback
from tqdm import tqdm

from explore.results import writer
from explore.results.layout import SweepLayout
from explore.store.uri import StorageError, redact

__all__ = ["EpochProgress", "Progress", "ProgressReporter", "fmt_knobs", "fmt_seconds",
           "fmt_value", "interactive", "setup_logging"]

log = logging.getLogger("explore")

INTERVAL_ENV = "EXPLORE_PROGRESS_SECONDS"
DEFAULT_INTERVAL_S = 10.0
MIN_GAP_S = 1.0
"""Plain output: the least time between two lines of one step, even for lines that matter."""


def interactive(stream: IO[str] | None = None) -> bool:
    """True when ``stream`` (stdout) is a terminal that can redraw a bar."""
    stream = stream if stream is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def _interval() -> float:
    try:
        return max(float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)), MIN_GAP_S)
    except ValueError:
        return DEFAULT_INTERVAL_S


def fmt_value(value: Any) -> str:
    """A knob or metric value for people: floats to 4 significant digits."""
    if value is None or isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    return str(value)


def fmt_knobs(config: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in sorted(config.items()))


def fmt_seconds(seconds: float) -> str:
    """``1:02:03`` / ``2:03`` (tqdm's style), ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    return str(tqdm.format_interval(seconds))


class Progress:
    """One long step's progress: ``update``/``set`` the count, ``note`` what it is doing,
    ``write`` a line above it, ``close`` it (a context manager closes it too).

    ``total=None``: the amount of work is not known yet (elapsed time only; ``set_total``
    once it is). ``tick``: keep the elapsed time (terminal) or a status line (plain output)
    going while the step itself reports nothing, e.g. while Ray Train workers start.
    """

    def __init__(self, desc: str, total: float | None = None, unit: str = "it", *,
                 tick: bool = False, stream: IO[str] | None = None,
                 interval: float | None = None) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.stream = stream if stream is not None else sys.stdout
        self.interval = _interval() if interval is None else interval
        self.n: float = 0
        self.text = ""
        self.start = time.monotonic()
        # (n, time) the rate counts from: the start when the amount of work is known
        self._rate_from: tuple[float, float] | None = (0, self.start) if total else None
        self._last_line = -math.inf
        self._printed: tuple[float, str] | None = None  # (n, text) of the last plain line
        self._lock = threading.RLock()
        self._closed = False
        self._bar: tqdm | None = None
        if interactive(self.stream):
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=True,
                             dynamic_ncols=True, bar_format=self._format(total))
        else:  # the step's start is logged by whoever starts it: first status after interval
            self._last_line = self.start
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if tick:
            self._ticker = threading.Thread(target=self._tick, daemon=True,
                                            name=f"progress-{desc}")
            self._ticker.start()

    @property
    def terminal(self) -> bool:
        """A redrawn bar (else plain lines)."""
        return self._bar is not None

    @staticmethod
    def _format(total: float | None) -> str | None:
        return None if total else "{desc}: {elapsed}{postfix}"

    # -- counting -------------------------------------------------------------------------

    def update(self, n: float = 1, *, important: bool = False) -> None:
        self.set(self.n + n, important=important)

    def set(self, n: float, *, important: bool = False) -> None:
        """The count is now ``n`` (absolute)."""
        with self._lock:
            if self._closed:
                return
            if self._rate_from is None:
                self._rate_from = (self.n, time.monotonic())
            delta, self.n = n - self.n, n
            if self._bar is not None:
                if delta >= 0:
                    self._bar.update(delta)
                else:  # went back (a restarted worker resumes an earlier epoch)
                    self._bar.n = n
                    self._bar.refresh()
            else:
                self._line(important=important)

    def set_total(self, total: float, n: float = 0) -> None:
        """The amount of work became known; rates and time left count from here."""
        with self._lock:
            self.total, self.n, self._rate_from = total, n, (n, time.monotonic())
            if self._bar is not None:
                started = self._bar.start_t
                self._bar.bar_format = self._format(total)
                self._bar.reset(total=total)
                self._bar.start_t = started  # elapsed keeps counting from the step's start
                if n:
                    self._bar.update(n)

    def note(self, text: str, *, important: bool = False) -> None:
        """What the step is doing (shown after the count)."""
        with self._lock:
            self.text = text
            if self._bar is not None:
                self._bar.set_postfix_str(text, refresh=True)
            elif important:
                self._line(important=True)

    def write(self, line: str) -> None:
        """A line of its own, above the bar."""
        with self._lock:
            if self._bar is not None:
                self._bar.write(line, file=self.stream)
            else:
                print(line, file=self.stream, flush=True)

    def close(self, text: str | None = None) -> None:
        with self._lock:
            if self._closed:
                return
            if text is not None:
                self.text = text
            self._stop.set()
            self._closed = True
            if self._bar is not None:
                self._bar.set_postfix_str(self.text, refresh=False)
                self._bar.close()
            else:
                self._line(force=True, final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- plain output ---------------------------------------------------------------------

    def remaining(self) -> float:
        """Seconds left at the rate since the first update (NaN when unknown)."""
        if not self.total or self._rate_from is None:
            return math.nan
        n0, t0 = self._rate_from
        done, spent = self.n - n0, time.monotonic() - t0
        if done <= 0 or spent <= 0:
            return math.nan
        return max(self.total - self.n, 0) * spent / done

    def status(self, final: bool = False) -> str:
        elapsed = time.monotonic() - self.start
        count = ""
        if self.total:
            count = f"{fmt_value(self.n)}/{fmt_value(self.total)} {self.unit}"
            count += f" ({100 * self.n / self.total:.0f}%)"
        elif self.n:
            count = f"{fmt_value(self.n)} {self.unit}"
        times = f"{fmt_seconds(elapsed)} elapsed"
        if not final and self.total and math.isfinite(self.remaining()):
            times += f", ~{fmt_seconds(self.remaining())} left"
        parts = [p for p in (count, self.text, f"[{times}]") if p]
        return f"{self.desc}: " + "  ".join(parts)

    def _line(self, *, important: bool = False, force: bool = False, final: bool = False) -> None:
        now = time.monotonic()
        gap = now - self._last_line
        if not (force or gap >= self.interval or (important and gap >= MIN_GAP_S)):
            return
        if self._printed == (self.n, self.text) and (final or not (force or important)):
            return  # nothing new to say
        self._last_line, self._printed = now, (self.n, self.text)
        print(self.status(final=final), file=self.stream, flush=True)

    def _tick(self) -> None:
        while not self._stop.wait(1.0 if self._bar is not None else MIN_GAP_S):
            with self._lock:
                if self._closed:
                    return
                try:
                    if self._bar is not None:
                        self._bar.refresh()
                    elif time.monotonic() - self._last_line >= self.interval:
                        self._line(force=True)  # a heartbeat: the step is still going
                except (OSError, ValueError):  # the stream went away: stop showing
                    return


class EpochProgress:
    """Turns the backbone job's stream (``explore.backbone.ray_job``: ``{"kind": "batch",
    ...}`` at most once a second and ``{"kind": "epoch", ...}`` after every epoch, from
    rank 0) into a bar counted in batches, with the epoch, loss and validation accuracy."""

    def __init__(self, desc: str, epochs: int, workers: int) -> None:
        self.epochs = epochs
        self.batches: int | None = None
        self.last = ""
        self.bar = Progress(desc, None, "batch", tick=True)
        self.bar.note(f"starting {workers} Ray Train worker{'s' if workers != 1 else ''}")

    def __call__(self, message: dict[str, Any]) -> None:
        epoch = int(message.get("epoch", 0))
        if message.get("kind") == "batch":
            batches = int(message["batches"])
            if self.batches != batches:
                self.batches = batches
                self.bar.set_total(self.epochs * batches, epoch * batches)
            self.bar.set(epoch * batches + int(message["batch"]))
            self.bar.note(f"epoch {epoch + 1}/{self.epochs}{self.last}")
            return
        parts = [f" loss {message['train_loss']:.4f}"] if "train_loss" in message else []
        if "val_acc" in message:
            parts.append(f" val_acc {message['val_acc']:.3f}")
        self.last = " ·" + "".join(parts) if parts else ""
        self.bar.note(f"epoch {epoch + 1}/{self.epochs} done{self.last}")
        if self.batches:
            self.bar.set((epoch + 1) * self.batches, important=True)
        else:  # no batch message came (a very short epoch): count epochs
            self.bar.set_total(self.epochs, epoch + 1)
            self.bar.note(f"epoch {epoch + 1}/{self.epochs} done{self.last}", important=True)

    def close(self, text: str | None = None) -> None:
        self.bar.close(text)


class _TqdmHandler(logging.Handler):
    """Log lines go to the current stdout, above any bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logging(verbose: bool = False) -> None:
    """explore's ``[explore]`` lines on stdout; Ray's, Tune's and Optuna's own chatter
    (banners, hints, study-created lines) only with ``verbose``."""
    root = logging.getLogger()
    if not any(isinstance(h, _TqdmHandler) for h in root.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("[explore] %(message)s"))
        # basicConfig-style handlers on stdout would print every line twice
        root.handlers[:] = [h for h in root.handlers if getattr(h, "stream", None)
                            not in (sys.stdout, sys.__stdout__)] + [handler]
    root.setLevel(logging.INFO)
    quiet_third_parties(verbose)


def quiet_third_parties(verbose: bool = False) -> None:
    """Ray sets up its own loggers when imported, so this runs after ``import ray``."""
    import optuna
    import ray  # noqa: F401 - configures the "ray" loggers that are set below

    optuna.logging.set_verbosity(logging.INFO if verbose else logging.WARNING)
    if verbose:
        return
    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Start-up banners and notes that point at temporary paths (the dashboard URL is
    # printed by explore itself); errors still show.
    for name in ("ray._private.worker", "ray._private.authentication",
                 "ray._private.authentication.authentication_token_setup"):
        logging.getLogger(name).setLevel(logging.ERROR)


class ProgressReporter(Callback):
    """The sweep's bar (trials done/total, running, best so far on the search metric, time
    left) and one line per finished trial; status=error rows for a trial that failed for
    good (after its retries), so the results say what was attempted; a stale error file
    is removed when a resumed trial later succeeds."""

    def __init__(self, total: int, metric: str, ctx: Any, on_trial_end: Any = None,
                 mode: str = "max") -> None:
        self.storage_errors: list[str] = []
        """Permanent storage failures trials reported (the driver ends the sweep with one)."""
        self.total, self.metric, self.ctx, self.mode = total, metric, ctx, mode
        self.on_trial_end: Callable[[], None] = on_trial_end or (lambda: None)
        self.finished = 0
        self.running = 0
        self.best: tuple[float, dict[str, Any]] | None = None
        self.start = time.monotonic()
        self._bar: Progress | None = None
        self._last_trial_line = -math.inf

    @property
    def bar(self) -> Progress:
        """Made on first use: Tune pickles its callbacks with the experiment state first."""
        if self._bar is None:
            self.start = time.monotonic()
            self._bar = Progress("sweep", self.total, "trial", tick=True)
            self._note()
        return self._bar

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_bar": None}  # a bar (a thread, a lock) stays here

    def _note(self, important: bool = False) -> None:
        parts = [f"{self.running} running"]
        if self.best is not None:
            parts.append(f"best {self.metric} {self.best[0]:.4f} ({fmt_knobs(self.best[1])})")
        self.bar.note(" · ".join(parts), important=important)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        running = sum(1 for t in trials if t.status == "RUNNING")
        if running != self.running:
            self.running = running
            self._note()

    def _trial_line(self, line: str, *, important: bool) -> None:
        """Every trial's line in a terminal; elsewhere at most one a second, except the
        ones that matter (a new best, a failure, the last trial)."""
        now = time.monotonic()
        last = self.finished >= self.total
        if self.bar.terminal or important or last or now - self._last_trial_line >= 1:
            self._last_trial_line = now
            self.bar.write(line)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from explore.sweep.trial import STORAGE_ERROR, epochs_reached

        result = trial.last_result or {}
        if result.get(STORAGE_ERROR):  # a permanent storage failure the trial did not retry
            self.storage_errors.append(str(result[STORAGE_ERROR]))
            self._failed(trial, str(result[STORAGE_ERROR]))
            return
        epochs = epochs_reached(result)
        if epochs is not None and not self._has_rows(trial):
            self._stopped(trial, result, epochs)
            return
        self.finished += 1
        self.running = max(self.running - 1, 0)
        value = float(result.get(self.metric, math.nan))
        better = not math.isnan(value) and (
            self.best is None or (value > self.best[0] if self.mode == "max" else value < self.best[0]))
        if better:
            self.best = (value, dict(trial.config))
        knobs = fmt_knobs(trial.config)
        self._advance()
        left = self.bar.remaining()
        self._trial_line(
            f"[{self.finished}/{self.total}] {knobs}: {self.metric} {value:.4f}"
            f"  few {result.get('acc_few', math.nan):.4f}"
            f"  overall {result.get('acc_overall', math.nan):.4f}"
            f"  ({int(result.get('num_seeds', 0))} seeds in "
            f"{result.get('trial_seconds', math.nan):.1f} s, "
            f"{fmt_seconds(time.monotonic() - self.start)} elapsed"
            + (f", ~{fmt_seconds(left)} left" if self.finished < self.total
               and math.isfinite(left) else "") + ")" + ("  best so far" if better else ""),
            important=better)
        writer.delete_rows(self.ctx.layout, SweepLayout.error_name(dict(trial.config)))
        self.on_trial_end()

    def _has_rows(self, trial: Any) -> bool:
        return SweepLayout.trial_name(trial.trial_id) in writer.existing_names(self.ctx.layout)

    def _stopped(self, trial: Any, result: dict[str, Any], epochs: dict[int, int]) -> None:
        """A trial the scheduler stopped: its line, and status=stopped rows with the epochs
        each seed reached (never results: the analysis leaves them out)."""
        from explore.sweep.trial import stopped_rows

        self._ended_without_results(
            trial, f"{fmt_knobs(trial.config)}: stopped early after "
                   f"{sum(epochs.values())} epoch(s) "
                   f"(val top-1 {float(result.get(self.metric, math.nan)):.4f})",
            important=False, name=SweepLayout.trial_name(trial.trial_id),
            rows=lambda: stopped_rows(self.ctx, dict(trial.config), trial.trial_id, result))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed(trial, _error_line(trial))

    def _failed(self, trial: Any, message: str) -> None:
        """A trial that failed for good: its line, and status=error rows (if the store takes
        them)."""
        from explore.sweep.trial import error_rows

        self._ended_without_results(
            trial, f"trial {trial.trial_id} ({fmt_knobs(trial.config)}) failed: {message}",
            important=True, name=SweepLayout.error_name(dict(trial.config)),
            # rows written before the failure (e.g. lost while reporting) are kept
            rows=lambda: [] if self._has_rows(trial) else error_rows(
                self.ctx, dict(trial.config), trial.trial_id, message))

    def _ended_without_results(self, trial: Any, what: str, *, important: bool, name: str,
                               rows: Callable[[], list[dict[str, Any]]]) -> None:
        """Count a trial that ended without results, print its line, write its ``rows``
        (none: nothing to write) as ``name`` — the store failing is logged, the driver
        stays up."""
        self.finished += 1
        self.running = max(self.running - 1, 0)
        self._advance()
        self._trial_line(f"[{self.finished}/{self.total}] {what}", important=important)
        try:
            built = rows()
            if built:
                writer.write_rows(self.ctx.layout, name, built)
        except StorageError as exc:
            log.error("could not record trial %s: %s", trial.trial_id, exc)
        self.on_trial_end()

    def _advance(self) -> None:
        self._note()
        self.bar.set(self.finished)  # plain output: the trial line already says it

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._note()
            self._bar.close()


def _error_line(trial: Any) -> str:
    """The last line of the trial's error (the exception message), redacted."""
    text = ""
    path = getattr(trial, "error_file", None) or ""
    try:
        if path:
            with open(path) as f:
                text = f.read()
    except OSError:
        pass
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return redact(lines[-1].strip())[:500] if lines else "unknown error (see the Ray logs)"
