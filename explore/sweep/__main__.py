"""``python -m explore.sweep``: one sweep of a search space, with Hydra's command-line
conventions where they make sense for one sweep per command.

    python -m explore.sweep --help | --list
    python -m explore.sweep NAME --help
    python -m explore.sweep NAME [key=value ...] [--cfg job [--resolve]]
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

from explore.config import SPACES_DIR, ConfigError, KnobSpace, list_spaces
from explore.store.uri import StorageError, redact

USAGE = """\
usage: python -m explore.sweep NAME [key=value ...]      run a sweep of search space NAME
       python -m explore.sweep NAME --help               NAME's knobs and composed config
       python -m explore.sweep NAME [key=value ...] --cfg job [--resolve]
                                                         print the composed config and exit
       python -m explore.sweep --list                    the search spaces' names"""

COMMON = (
    ("num_samples=20 repeats=10", "configurations Optuna proposes × seeds per configuration"),
    ("space.k=5", "pin a knob to one value (a space with every knob pinned runs once)"),
    ("space.k={type:int,low:2,high:5}", "narrow a knob's range (also: {choices:[a,b]})"),
    ("dry_run=true", "check config, data and storage; print what would run and what is "
                     "cached; train and write nothing"),
    ("verbose=true", "also show Ray's, Tune's and Optuna's own output"),
    ("storage_uri=s3://bucket/explore", "where features, models and results go "
                                        "(default ./explore-store or $EXPLORE_STORAGE_URI)"),
    ("features=DIR_OR_S3_URI", "bring your own features (train/val/test.npz) instead of "
                               "dataset + backbone"),
    ("dataset=cifar100_lt dataset.root=/data", "another dataset (config group: dataset/)"),
    ("backbone=resnet32 backbone.epochs=30", "another backbone or recipe (group: backbone/)"),
    ("base=lws", "the base model AlphaNet corrects / the reference (group: base/)"),
    ("search.sampler=grid search.objective=val_few", "sampler tpe|random|grid; what is "
                                                      "optimised on validation: val_overall|"
                                                      "val_few|few_within|pareto"),
    ("mode=full", "train the backbone with the method (Ray Train) instead of heads on "
                  "cached features"),
    ("resume=SWEEP_ID", "continue an interrupted sweep (num_samples may grow)"),
)


class UsageError(ValueError):
    """A command line that is not ``NAME [key=value ...] [options]``."""


def _parse(argv: list[str]) -> tuple[str | None, list[str], dict[str, Any]]:
    """(space name, overrides, options). Options may come anywhere, as in Hydra."""
    name: str | None = None
    overrides: list[str] = []
    opts: dict[str, Any] = {"help": False, "list": False, "cfg": None, "resolve": False}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            opts["help"] = True
        elif arg in ("-l", "--list"):
            opts["list"] = True
        elif arg in ("-c", "--cfg") or arg.startswith("--cfg="):
            if "=" in arg:
                value = arg.split("=", 1)[1]
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise UsageError("--cfg needs a value: --cfg job")
            if value not in ("job", "all"):
                raise UsageError(f"--cfg {value}: explore has no Hydra app config to show; "
                                 "--cfg job prints the sweep's composed config")
            opts["cfg"] = value
        elif arg == "--resolve":
            opts["resolve"] = True
        elif arg in ("-m", "--multirun"):
            raise UsageError("-m/--multirun is not needed: one command runs one whole sweep "
                             "(its trials are the runs); sweep a knob through space.KNOB, or "
                             "run one command per space")
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg}; options: --help, --list, --cfg job, "
                             "--resolve (everything else is key=value)")
        elif name is None and "=" not in arg:
            name = arg
        else:
            overrides.append(arg)
        i += 1
    return name, overrides, opts


def _knob_line(name: str, spec: Any) -> str:
    knob = KnobSpace.parse(name, spec)
    if knob.type in ("int", "float"):
        low, high = knob.range()
        rng = f"{knob.type} {low:g}..{high:g}" + (" (log)" if knob.log else "")
    elif knob.type == "categorical":
        rng = " | ".join(str(c) for c in knob.choices)
    else:
        rng = f"= {knob.value} (pinned)"
    return f"{name}: {rng}"


def _plain(name: str, overrides: list[str]) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from explore.config import compose

    plain = OmegaConf.to_container(compose(name, overrides), resolve=False)
    assert isinstance(plain, dict)  # a composed config is a mapping
    return {str(k): v for k, v in plain.items()}


def _summary(raw: dict[str, Any]) -> str:
    method = raw.get("method", {}).get("name")
    base = raw.get("base", {}).get("name")
    dataset = (raw.get("dataset") or {}).get("name")
    return f"{method} on {base}, {dataset}, backbone {(raw.get('backbone') or {}).get('arch')}"


def general_help() -> str:
    lines = [USAGE, "", "search spaces (method on base, data, backbone; knobs and ranges):"]
    width = max([16, *(len(name) + 1 for name in list_spaces())])
    for name in list_spaces():
        try:
            raw = _plain(name, [])
        except ConfigError as exc:
            lines.append(f"  {name:<{width}}{exc}")
            continue
        lines.append(f"  {name:<{width}}{_summary(raw)}")
        knobs = [_knob_line(k, v) for k, v in (raw.get("space") or {}).items()]
        lines.append(f"  {'':<{width}}" + ("; ".join(knobs) or "no knob"))
    lines += ["", "common overrides (Hydra syntax, any key of the composed config):"]
    for override, what in COMMON:
        lines.append(f"  {override}")
        lines += textwrap.wrap(what, 96, initial_indent=" " * 6, subsequent_indent=" " * 6)
    lines += ["", "An unknown key is refused with the closest valid one; NAME --help shows "
              "every key of a space.", "results (Parquet): <storage_uri>/sweeps/<sweep_id>/"
              "results", "live view: optuna-dashboard <storage_uri>/sweeps/<sweep_id>/"
              "optuna.journal  (pip install 'explore[dashboard]')"]
    return "\n".join(lines)


def space_help(name: str, overrides: list[str]) -> str:
    from omegaconf import OmegaConf

    raw = _plain(name, overrides)
    lines = [f"{name}: {_summary(raw)}"]
    described = _yaml_comment(SPACES_DIR / f"{name}.yaml")
    if described:
        lines += [f"  {line}" for line in described]
    lines += ["", "knobs swept (space.*; pin one with space.KNOB=VALUE, e.g. "
              f"{_pin_example(raw)}):"]
    lines += [f"  {_knob_line(k, v)}" for k, v in (raw.get("space") or {}).items()] or ["  none"]
    method = {k: v for k, v in (raw.get("method") or {}).items() if k != "name"}
    if method:
        lines += ["", "method settings (method.KEY=VALUE; a knob in space.* overrides its "
                  "setting):"]
        lines += textwrap.wrap(", ".join(f"{k}={v}" for k, v in method.items()), 96,
                               initial_indent="  ", subsequent_indent="  ")
    lines += ["", "composed config (every key can be overridden; --cfg job prints it alone):",
              OmegaConf.to_yaml(OmegaConf.create(raw)).rstrip()]
    return "\n".join(lines)


def _pin_example(raw: dict[str, Any]) -> str:
    for k, spec in (raw.get("space") or {}).items():
        knob = KnobSpace.parse(k, spec)
        default = (raw.get("method") or {}).get(k)
        value = default if default is not None else knob.bounds()[0]
        return f"space.{k}={value}"
    return "space.KNOB=VALUE"


def _yaml_comment(path: Path) -> list[str]:
    """The leading comment of a search-space file: what the space is for."""
    out = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        out.append(line.lstrip("# ").rstrip())
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        name, overrides, opts = _parse(argv)
        if opts["list"]:
            print("\n".join(list_spaces()))
            return 0
        if name is None:
            if opts["help"]:
                print(general_help())
                return 0
            print(USAGE, file=sys.stderr)
            return 2
        if opts["help"]:
            print(space_help(name, overrides))
            return 0
        if opts["cfg"]:
            from omegaconf import OmegaConf

            from explore.config import compose

            print(OmegaConf.to_yaml(compose(name, overrides), resolve=opts["resolve"]).rstrip())
            return 0
    except (UsageError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _run(name, overrides)


def _run(name: str, overrides: list[str]) -> int:
    from explore.sweep import phases

    phases.mark("imports")
    try:
        return _run_sweep(name, overrides)
    finally:
        phases.mark("summary")
        phases.write()


def _run_sweep(name: str, overrides: list[str]) -> int:
    from omegaconf import OmegaConf

    from explore.config import compose, sweep_config
    from explore.console import setup_logging
    from explore.sweep import phases
    from explore.sweep.driver import SweepFailedError, run
    from explore.sweep.tuning import SweepInterruptedError

    try:
        composed = compose(name, overrides)
        cfg = sweep_config(composed, name)
        raw = OmegaConf.to_container(composed, resolve=True)
        assert isinstance(raw, dict)  # a composed config is a mapping
        setup_logging(cfg.verbose)
        phases.mark("config")
        uri = run(cfg, {str(k): v for k, v in raw.items()}, overrides=overrides)
    except (SweepInterruptedError, KeyboardInterrupt) as exc:
        print(f"error: {exc or 'interrupted'}; finished trials are kept — run the same command "
              "with resume=<sweep id> to finish it", file=sys.stderr)
        return 130
    except (ConfigError, StorageError, ValueError, FileNotFoundError, SweepFailedError) as exc:
        print(f"error: {redact(str(exc).strip().splitlines()[0])}", file=sys.stderr)
        return 2
    if not cfg.dry_run:
        print(f"results: {uri}")
    return 0


if __name__ == "__main__":
    from explore.sweep.cluster import exit_process

    exit_process(main())
