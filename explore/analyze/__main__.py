"""``python -m explore.analyze <results-uri> [...] [--out DIR] [--tolerance 0.02]``

Exit status 0 on success, 2 with a one-line ``error: ...`` on stderr for input the analysis
cannot use (no Parquet files, not explore results, no ok rows).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from explore.analyze.load import AnalyzeError
from explore.analyze.report import analyze, stdout_text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m explore.analyze",
        description="Summarise explore sweep results (Parquet): paper-style table, best "
        "configurations chosen on validation, Pareto front, plots and a report.",
    )
    p.add_argument("uris", nargs="+", metavar="RESULTS_URI",
                   help="local dir or s3://bucket/prefix: a results dir, a sweep dir or a storage root")
    p.add_argument("--out", type=Path, default=Path("out/analysis"), help="output directory")
    p.add_argument("--tolerance", type=float, default=0.02,
                   help="allowed drop of validation overall accuracy vs the base (fraction, 0.02 = 2 points)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.tolerance >= 0:
        print(f"error: --tolerance must be >= 0, got {args.tolerance}", file=sys.stderr)
        return 2
    try:
        result = analyze(args.uris, args.out, tolerance=args.tolerance, seed=args.seed)
    except AnalyzeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(stdout_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
