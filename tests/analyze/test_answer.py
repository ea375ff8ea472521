"""sweep_summary: the text a sweep prints when it ends, from the report's own code."""

from __future__ import annotations

import pandas as pd
import pytest

import explore.analyze
from explore.analyze import sweep_summary
from explore.analyze.__main__ import main
from explore.analyze.verdicts import no_beat_sentence
from tests.analyze.crafted import rows_for, write_sweep


def _rows() -> list[dict]:
    ref = rows_for("s1", "crt", trial_id="crt", test={"few": [10, 11, 12]},
                   val={"few": [11] * 3, "overall": [45] * 3})
    a = rows_for("s1", "alphanet", base="crt", trial_id="t1", knobs={"k": 8},
                 test={"few": [15, 16, 18], "overall": [50, 50, 50]},
                 val={"few": [25] * 3, "overall": [44.5] * 3})
    single = rows_for("s1", "alphanet", base="crt", trial_id="t2", knobs={"k": 4}, seeds=(0,),
                      test={"few": [30]}, val={"few": [20], "overall": [46]})
    stopped = rows_for("s1", "alphanet", base="crt", trial_id="t3", knobs={"k": 6},
                       status="stopped", val={"few": [99] * 3, "overall": [99] * 3})
    error = rows_for("s1", "alphanet", base="crt", trial_id="t4", knobs={"k": 7}, seeds=(0,),
                     status="error")
    return ref + a + single + stopped + error


def test_is_exported():
    assert "sweep_summary" in explore.analyze.__all__


def test_answer_first_then_table_reference_first():
    text = sweep_summary(pd.DataFrame(_rows()))
    lines = text.splitlines()
    assert lines[0] == "Recommended: alphanet(crt) k=8  (3 seeds)"
    assert "    few     +5.33 [+3.90, +6.77] better" in lines
    table_at = lines.index("Accuracy (points), mean ± std over seeds (– with one seed):")
    assert lines[table_at + 1].startswith("configuration")
    assert lines[table_at + 3].startswith("crt (reference)")
    single = next(line for line in lines if line.startswith("alphanet(crt) k=4 "))
    assert "30.00 ± –" in single and " 1  " in single
    # stopped and error rows count toward nothing, and are said to be left out
    assert "k=6" not in text and "k=7" not in text
    assert "left out of every statistic: 1 error, 3 stopped" in text


def test_no_beat_sentence_and_tolerance():
    rows = [r for r in _rows() if r["trial_id"] in ("crt", "t2")]
    text = sweep_summary(pd.DataFrame(rows), tolerance=2.0)
    assert no_beat_sentence(2.0) in text
    assert no_beat_sentence(2.0) == ("No configuration beats the base on few without losing "
                                     "more than 2 points overall.")
    assert "(With one seed there is no interval: rerun with more seeds to tell.)" in text
    for bad in (0, 100, -3):
        with pytest.raises(ValueError, match=r"\(0, 100\)"):
            sweep_summary(pd.DataFrame(rows), tolerance=bad)


def test_same_table_as_the_report(tmp_path, capsys):
    rows = _rows()
    write_sweep(tmp_path / "store", "s1", rows)
    assert main([str(tmp_path / "store"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    text = sweep_summary(pd.DataFrame(rows))
    table_lines = text.split("(– with one seed):\n", 1)[1].split("\n\n", 1)[0]
    assert table_lines in out
    # the answer too, line for line (the CLI adds the rerun command, which needs sweep.json)
    answer = text.split("\n\nAccuracy", 1)[0].splitlines()
    assert len(answer) > 5 and all(line in out.splitlines() for line in answer)


def test_no_ok_rows():
    rows = rows_for("s1", "crt", trial_id="crt", status="error", seeds=(0,))
    assert sweep_summary(pd.DataFrame(rows)) == (
        "No ok rows to summarise (1 rows: 0 ok; left out of every statistic: 1 error).")
