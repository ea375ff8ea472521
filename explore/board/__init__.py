"""Leaderboards: every method of a board tuned under one budget, its configuration chosen
on validation, re-run on fresh seeds paired with the base, one paper-style table
(``python -m explore.board NAME``)."""
