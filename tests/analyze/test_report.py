"""report.md / report.html: open with the answer, captioned tables, one section per group."""

from __future__ import annotations

import re
from pathlib import Path

from explore.analyze.report import analyze
from explore.analyze.verdicts import no_beat_sentence
from tests.analyze.crafted import rows_for, write_sweep


def _store(tmp_path: Path) -> Path:
    ref = rows_for("s1", "crt", trial_id="crt", test={"few": [10, 11, 12]},
                   val={"few": [11] * 3, "overall": [45] * 3})
    # eligible and recommended, but its test few interval holds 0: it does not beat the base
    a = rows_for("s1", "alphanet", base="crt", trial_id="t1", knobs={"k": 8, "rho": 0.5},
                 test={"few": [9, 13, 14]}, val={"few": [25] * 3, "overall": [45] * 3})
    b = rows_for("s1", "alphanet", base="crt", trial_id="t2", knobs={"k": 3, "rho": 0.5},
                 test={"few": [11, 11, 12]}, val={"few": [20] * 3, "overall": [44.8] * 3})
    write_sweep(tmp_path / "store", "s1", ref + a + b, overrides=["dataset=cifar100_lt"])
    other = rows_for("s2", "ce", trial_id="ce", dataset="places_lt", deterministic=True)
    other += rows_for("s2", "lfm", base="ce", trial_id="t1", knobs={"alpha": 0.5},
                      dataset="places_lt")
    write_sweep(tmp_path / "store", "s2", other, overrides=[], space_name="lfm_alpha_tau")
    return tmp_path / "store"


def test_markdown_opens_with_the_answer(tmp_path):
    a = analyze([str(_store(tmp_path))], tmp_path / "out", tolerance=0.5)
    md = (tmp_path / "out" / "report.md").read_text()
    head = md.split("\n## Group 1", 1)[0]  # everything before the first group's details
    assert head.startswith("# explore sweep analysis\n\n## Answer\n\nFound 2 comparability groups")
    assert "**Recommended: alphanet(crt) k=8 rho=0.5  (3 seeds)**" in head
    # differences -1, 2, 2: mean 1, sd sqrt(3), se 1 -> 1 ± 4.303
    assert "few     +1.00 [-3.30, +5.30] no clear difference" in head
    assert no_beat_sentence(0.5) in head
    assert "python -m explore.sweep alphanet_k space.k=8 space.rho=0.5 num_samples=1 repeats=10 " \
           "dataset=cifar100_lt storage_uri=" in head
    assert head.count("### Group ") == 2
    assert md.index("## Group 1 of 2") < md.index("## Group 2 of 2") < md.index("## Data")
    assert len(a.groups) == 2


def test_html_fits_and_captions_tables(tmp_path):
    a = analyze([str(_store(tmp_path))], tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text()
    assert "max-width: 1340px" in page
    assert page.index('class="answer') < page.index("<table>")
    n_tables = page.count("<table>")
    assert n_tables == page.count("<caption>") == 6  # verdicts, mean ± std, Pareto per group
    pngs = sum(len(p) for p in a.plots.values())
    assert page.count("data:image/png;base64,") == pngs
    assert "<script" not in page
    # autoescaped: labels cannot inject markup
    assert re.search(r"<td>alphanet\(crt\) k=8 rho=0.5</td>", page)
