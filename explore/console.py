"""What the driver's terminal shows while it works: a progress bar for every long step
(backbone training, feature extraction and import, base training, the sweep itself) and
explore's log lines. A ground-floor module: the pipeline and the sweep both draw with it.

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
from collections.abc import Mapping
from typing import IO, Any

from tqdm import tqdm

__all__ = ["EpochProgress", "Progress", "fmt_knobs", "fmt_seconds", "fmt_value", "interactive",
           "quiet_third_parties", "setup_logging"]

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
    # ray.tune.tune: on a stop it suggests Tuner.restore; explore's own line says resume=.
    for name in ("ray._private.worker", "ray._private.authentication",
                 "ray._private.authentication.authentication_token_setup", "ray.tune.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)
