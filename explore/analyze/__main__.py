"""``python -m explore.analyze RESULTS_URI... [--out DIR] [--tolerance POINTS] [--strict]
[--best-command]``; ``python -m explore.analyze BOARD_URI [--out DIR]`` (a leaderboard's
``<storage_uri>/boards/<board id>``) prints the board's table and writes it under ``--out``.

Exit status 0 on success; 2 with a one-line ``error: ...`` on stderr for input the analysis
cannot use (no Parquet files, not explore results, no ok rows, a bad ``--tolerance``), for an
``--out`` that cannot be written, for
any unreadable result file under ``--strict``, and for ``--best-command`` when there is no
single recommendation to rerun. Without ``--strict`` each result file left out is named on
stderr (``warning: ...``) and the others are analysed.

``--best-command`` prints only the command that reruns the recommended configuration with
more seeds (nothing else on stdout, no files written). When no configuration qualifies it
exits 2 rather than print another configuration's command: a script that runs the line
must only ever run what the stated rule chose.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from explore.analyze.answer import DEFAULT_TOLERANCE
from explore.analyze.board import is_board
from explore.analyze.load import AnalyzeError
from explore.analyze.report import (
    Analysis,
    best_command,
    check_tolerance,
    run_analysis,
    stdout_text,
    write_outputs,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m explore.analyze",
        description="Which configuration should I use, and does it beat the reference on the "
        "few classes without losing overall accuracy? Paired verdicts over seeds, a "
        "recommendation chosen on validation, tables, plots and a report.",
    )
    p.add_argument("uris", nargs="+", metavar="RESULTS_URI",
                   help="local dir or s3://bucket/prefix: a results dir, a sweep dir or a "
                   "storage root")
    p.add_argument("--out", type=Path, default=Path("out/analysis"), help="output directory")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="POINTS",
                   help="points of validation overall accuracy a recommendation may lose "
                   f"against its reference, in (0, 100) (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--strict", action="store_true",
                   help="fail (exit 2) when any result file cannot be read")
    p.add_argument("--best-command", action="store_true",
                   help="print only the command that reruns the recommendation with more seeds")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (plots)")
    return p


def _write(analysis: Analysis, out: Path, seed: int) -> Analysis:
    """The output files, or an :class:`AnalyzeError` naming ``--out`` when they cannot be
    written (a path under a file, no permission, a full or read-only disk)."""
    try:
        return write_outputs(analysis, out, seed=seed)
    except OSError as e:
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(out) else ""
        raise AnalyzeError(f"cannot write the analysis to --out {out}: "
                           f"{e.strerror or e}{where}") from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if len(args.uris) == 1 and is_board(args.uris[0]):
        return _board(args.uris[0], args.out)
    try:
        check_tolerance(args.tolerance)
        analysis = run_analysis(args.uris, tolerance=args.tolerance, strict=args.strict)
        for problem in analysis.problems:
            print(f"warning: {problem}; left out", file=sys.stderr)
        if args.best_command:
            print(best_command(analysis))
            return 0
        analysis = _write(analysis, args.out, args.seed)
    except AnalyzeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(stdout_text(analysis))
    return 0


def _board(uri: str, out: Path) -> int:
    """A leaderboard's directory: the table ``python -m explore.board`` printed, from its
    stored rows, and its Markdown, HTML and Pareto plot under ``out``."""
    from explore.analyze.board import (
        board_rows,
        html_page,
        load_board_data,
        markdown,
        pareto_png,
        text_table,
    )

    data = load_board_data(uri)
    rows = board_rows(data)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(markdown(data, rows))
    (out / "table.html").write_text(html_page(data, rows))
    (out / "pareto.png").write_bytes(pareto_png(data, rows))
    print(text_table(data, rows))
    print(f"\nwritten: {out / 'table.md'}, {out / 'table.html'}, {out / 'pareto.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
