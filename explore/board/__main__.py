"""``python -m explore.board NAME [key=value ...]``: run a leaderboard.

    python -m explore.board --list
    python -m explore.board fashion_mnist
    python -m explore.board fashion_mnist features=DIR storage_uri=s3://bucket/explore
    python -m explore.board fashion_mnist budget.configurations=8 final_seeds=5
    python -m explore.board fashion_mnist resume=BOARD_ID

The board's own keys (base, entries, budget.*, budgets.*, seed, final_seeds, final_seed,
resume, overrides) configure it; every other override goes to each entry's sweep.
Exit status 0 with the table printed and ``board: <uri>`` last; 2 with one ``error:`` line
for a configuration or storage problem; 130 when interrupted (``resume=`` finishes it).
"""

from __future__ import annotations

import sys

from explore.config import ConfigError
from explore.store.uri import StorageError, redact

USAGE = "usage: python -m explore.board NAME [key=value ...]   (--list: the boards)"


def main(argv: list[str] | None = None) -> int:
    from explore.board.config import list_boards, load_board

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv in (["--list"], ["-l"]):
        print("\n".join(list_boards()))
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__ if argv else USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    from explore.board.runner import run_board
    from explore.console import setup_logging
    from explore.sweep.tuning import SweepInterruptedError

    board = None
    try:
        board = load_board(argv)
        setup_logging(board.entries[0].cfg.verbose)
        uri = run_board(board)
    except (SweepInterruptedError, KeyboardInterrupt) as exc:
        print(f"error: {exc or 'interrupted'}; what finished is kept — run the same command "
              "with resume=<board id> (printed when it started) to finish it", file=sys.stderr)
        return 130
    except (ConfigError, StorageError, ValueError, FileNotFoundError) as exc:
        print(f"error: {redact(str(exc).strip().splitlines()[0])}", file=sys.stderr)
        return 2
    print(f"board: {uri}")
    return 0


if __name__ == "__main__":
    from explore.sweep.cluster import exit_process

    exit_process(main())
