"""A sweep's fixed cost, phase by phase, for the three ways of running it.

A 10-seed AlphaNet sweep (one configuration: k=5, euclidean, rho=0.5) on features of
CIFAR-100-LT's shape with an imported classifier, timed as a whole process from here
(before ``Popen`` → after ``wait``): (a) on its own local cluster, (b) with ``RAY_ADDRESS``
of a running cluster, (c) through ``ray job submit`` to that cluster. Each way's first
sweep on the features is cold (it imports them); the figures are medians of the second
sweeps on the same store. The phases come from the driver's marks (``EXPLORE_PHASE_LOG``,
explore/sweep/phases.py) and the trial's own ``started_at``/``finished_at`` (its rows).
(a) also runs a one-seed sweep, each between two whole processes of Ray's own
``ray.init(); ray.shutdown()``, with the same environment.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np

from benchmarks._timing import Figure

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TIMEOUT_S = 600.0
WAYS = ("own cluster", "RAY_ADDRESS", "job submit")
PHASES = ("imports and config", "Ray start or connect", "prepare (features, base, reference rows)",
          "trial set-up and worker start", "the trials' own work", "after the trials",
          "closing summary", "shut-down", "total")
TO_MAIN = "… of which: until main() (the 'imports' mark)"
SUBMITTED = "… of which: job client until 'submitted successfully'"
TAIL = "… of which: after the job's log stream closed"
ROWS = (PHASES[0], TO_MAIN, SUBMITTED, *PHASES[1:8], TAIL, PHASES[8])


def _logged_at(output: str, text: str) -> float:
    """Unix time of the first line of Ray's CLI log containing ``text`` (NaN: none)."""
    for line in output.splitlines():
        if text in line:
            with contextlib.suppress(ValueError):
                return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return math.nan


def feature_dir(path: Path, seed: int = 0, classes: int = 100, d: int = 64) -> Path:
    """CIFAR-100-LT's shape in the bring-your-own format: train counts 500·0.01^(c/99)
    (10,847 rows), 20 val and 100 test per class, Gaussian classes, and ``classifier.npz``
    from a class-balanced ridge fit (the "imported cRT classifier")."""
    rng = np.random.default_rng(seed)
    counts = (500 * 0.01 ** (np.arange(classes) / (classes - 1))).astype(int)
    centers = rng.normal(size=(classes, d)) * 0.45

    def draw(ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(classes), ns).astype(np.int64)
        return (centers[y] + rng.normal(size=(len(y), d))).astype(np.float32), y

    path.mkdir(parents=True, exist_ok=True)
    splits = {name: draw(ns) for name, ns in (("train", counts), ("val", np.full(classes, 20)),
                                              ("test", np.full(classes, 100)))}
    for name, (x, y) in splits.items():
        np.savez(path / f"{name}.npz", features=x, labels=y)
    x, y = splits["train"]
    xb = np.hstack([x, np.ones((len(x), 1), np.float32)]).astype(np.float64)
    w = (1.0 / counts[y])[:, None]  # every class weighs the same
    targets = np.eye(classes)[y]
    beta = np.linalg.solve(xb.T @ (w * xb) + 1e-3 * np.eye(d + 1), xb.T @ (w * targets))
    np.savez(path / "classifier.npz", weight=beta[:d].T.astype(np.float32),
             bias=beta[d].astype(np.float32))
    return path


def sweep_args(feats: Path, store: Path, repeats: int) -> list[str]:
    return [sys.executable, "-m", "explore.sweep", "alphanet_k", f"features={feats}",
            f"storage_uri={store}", f"repeats={repeats}", "space.k=5", "space.distance=euclidean"]


class Runner:
    """Whole processes under one environment (temp HOME and RAY_TMPDIR, auth off, the
    worktree on PYTHONPATH), each a new session so a stuck one can be killed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "home").mkdir()
        self.env = {**os.environ, "HOME": str(root / "home"), "RAY_TMPDIR": str(root / "ray"),
                    "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        for name in ("RAY_ADDRESS", "EXPLORE_PHASE_LOG"):
            self.env.pop(name, None)
        self.count = 0
        self.last_output = ""

    def run(self, cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
        """(Unix start, wall seconds, output) of ``cmd``; raises on failure."""
        started_unix, started = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env={**self.env, **(env or {})}, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RuntimeError(f"{' '.join(cmd[:6])} …: no end after {TIMEOUT_S:.0f} s") from None
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:6])} … exited {proc.returncode}:\n{output[-3000:]}")
        return started_unix, wall, output

    def sweep(self, cmd: list[str], job_address: str | None = None,
              env: dict[str, str] | None = None) -> dict[str, float]:
        """One sweep; its phases (seconds) and the figures it leaves (upload MiB)."""
        self.count += 1
        log = self.root / f"phases-{self.count}.jsonl"
        if job_address is not None:
            runtime_env = {"env_vars": {"EXPLORE_PHASE_LOG": str(log)}}
            cmd = [str(BIN / "ray"), "job", "submit", "--address", job_address, "--working-dir",
                   str(REPO), "--runtime-env-json", json.dumps(runtime_env), "--", *cmd]
        else:
            env = {**(env or {}), "EXPLORE_PHASE_LOG": str(log)}
        start, wall, output = self.run(cmd, env)
        self.last_output = output
        results = [line for line in output.splitlines() if line.startswith("results: ")]
        if not results or not log.exists():
            raise RuntimeError(f"no results line or phase log:\n{output[-3000:]}")
        marks = {m["phase"]: m["at"] for m in map(json.loads, log.read_text().splitlines())}
        if "trials" not in marks:
            raise RuntimeError(f"the sweep's trials did not finish:\n{output[-3000:]}")
        first, last = _trial_span(results[-1].removeprefix("results: ").strip())
        ends = [start, marks["config"], marks["ray"], marks["prepare"], first, last,
                marks["trials"], marks["summary"], start + wall]
        phases = dict(zip(PHASES, np.diff(ends).tolist()))
        phases["total"] = wall
        phases[TO_MAIN] = marks["imports"] - start
        if job_address is not None:
            phases[SUBMITTED] = _logged_at(output, "submitted successfully") - start
            phases[TAIL] = start + wall - _logged_at(output, "WebSocket closed")
            phases["uploaded"] = float("Uploading package" in output)
        return phases


def _trial_span(uri: str) -> tuple[float, float]:
    from explore.results.reader import read_rows

    rows = read_rows([uri]).rows
    trials = rows[rows["role"] == "configuration"]
    if trials.empty:
        raise RuntimeError(f"no configuration rows in {uri}")
    return float(trials["started_at"].min()), float(trials["finished_at"].max())


def _kill_naming(text: str) -> None:
    """SIGKILL every process whose command line names ``text`` (a temp dir of ours)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _table(columns: dict[str, list[dict[str, float]]]) -> list[str]:
    lines = ["| phase (s, median of the second sweeps) | " + " | ".join(columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for phase in ROWS:
        cells = [f"{_median(runs, phase):.2f}" if all(phase in r for r in runs) else "–"
                 for runs in columns.values()]
        name = f"**{phase}**" if phase == "total" else phase
        lines.append(f"| {name} | " + " | ".join(f"**{c}**" if phase == "total" else c
                                                 for c in cells) + " |")
    return lines


def bench_fixed_cost(repeats: int, out: Callable[[str], None] = print) -> list[Figure]:
    """``repeats`` second sweeps per way (after one cold sweep each); prints the phase
    table through ``out`` and returns the figures."""
    from tests.support.ray_nodes import start_node

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()  # a cluster an earlier benchmark left would compete for the cores
    root = Path(tempfile.mkdtemp(prefix="fc", dir="/tmp"))  # short: Ray's socket paths
    runner = Runner(root)
    feats = feature_dir(root / "feats")
    baseline_cmd = [sys.executable, "-c", "import ray; ray.init(); ray.shutdown()"]
    columns: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    cold: dict[str, float] = {}
    own_one: list[float] = []
    ray_base: list[float] = []
    head = None
    try:
        # (a) own cluster: no cluster of ours runs meanwhile.
        store = root / "store-own"
        cold[WAYS[0]] = runner.sweep(sweep_args(feats, store, 10))["total"]
        ray_base.append(runner.run(baseline_cmd)[1])
        for i in range(repeats):
            own_one.append(runner.sweep(sweep_args(feats, store, 1))["total"])
            ray_base.append(runner.run(baseline_cmd)[1])
            columns[WAYS[0]].append(runner.sweep(sweep_args(feats, store, 10)))
            ray_base.append(runner.run(baseline_cmd)[1])
            out(f"  (own cluster {i + 1}/{repeats}: 1 seed {own_one[-1]:.1f} s, 10 seeds "
                f"{columns[WAYS[0]][-1]['total']:.1f} s; Ray's start+stop {ray_base[-3]:.1f}, "
                f"{ray_base[-2]:.1f}, {ray_base[-1]:.1f} s)")
        # (b), (c): one running head, HOME and auth mode as for its clients.
        started = time.perf_counter()
        head = start_node(root / "head.log", num_cpus=2, resources={"trial_driver": 2}, env=runner.env)
        out(f"  (ray start --head: serving after {time.perf_counter() - started:.1f} s)")
        assert head.dashboard is not None
        for way, store in ((WAYS[1], root / "store-addr"), (WAYS[2], root / "store-job")):
            def sweep(store: Path = store, way: str = way) -> dict[str, float]:
                if way == WAYS[1]:
                    return runner.sweep(sweep_args(feats, store, 10), env={"RAY_ADDRESS": head.gcs_address})
                return runner.sweep(sweep_args(feats, store, 10), job_address=head.dashboard)

            cold[way] = sweep()["total"]
            for i in range(repeats):
                columns[way].append(sweep())
                out(f"  ({way} {i + 1}/{repeats}: {columns[way][-1]['total']:.1f} s)")
    finally:
        if head is not None:
            head.stop()
        _kill_naming(str(root))
        shutil.rmtree(root, ignore_errors=True)

    for line in ["", f"  whole process, seconds; medians of {repeats} second sweeps (10 seeds, one "
                 "configuration); cold first sweeps: " + ", ".join(f"{w} {s:.1f}" for w, s in cold.items()),
                 *_table(columns)]:
        out(line)
    ratios = [one / ((a + b) / 2) for one, a, b in zip(own_one, ray_base[0::2], ray_base[1::2])]
    addr, job = _median(columns[WAYS[1]], "total"), _median(columns[WAYS[2]], "total")
    ratio = statistics.median(ratios)
    rounds = "[" + ", ".join(f"{r['total']:.1f}" for r in columns[WAYS[1]]) + "] s"
    uploads = sum(int(r["uploaded"]) for r in columns[WAYS[2]])
    jrounds = ("[" + ", ".join(f"{r['total']:.1f}" for r in columns[WAYS[2]]) + f"] s; working dir uploaded "
               f"in {uploads} of {repeats} (else Ray's 'already exists, skipping upload')")
    return [
        Figure("second 10-seed sweep via RAY_ADDRESS (median)", addr, "s", "<= 5 s", addr <= 5.0, rounds),
        Figure("second 10-seed sweep via job submit (median)", job, "s", "<= 7 s", job <= 7.0, jrounds),
        Figure("second 10-seed sweep, own cluster (median)", _median(columns[WAYS[0]], "total"), "s",
               note=f"cold first sweeps: {cold[WAYS[0]]:.1f} / {cold[WAYS[1]]:.1f} / {cold[WAYS[2]]:.1f} s "
               "(own / RAY_ADDRESS / job submit)"),
        Figure("1-config sweep, own cluster / Ray start+stop", ratio, "x", "<= 1.5x", ratio <= 1.5,
               f"median of {repeats} pairs: 1-seed sweep {statistics.median(own_one):.1f} s vs "
               f"`ray.init(); ray.shutdown()` {statistics.median(ray_base):.1f} s (before and after)"),
    ]
