"""Inputs that used to pass every check and then fail every trial (or end in a traceback)
are refused up front with one line: seeds past what numpy/scikit-learn take, knob values
no float32 maths survives, a features header claiming a huge array, a line separator
inside a class name. The sweep command stops before Ray starts (no Ray here)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from explore.config import MAX_SEED, load
from explore.store import FeatureImportError, import_feature_dir
from explore.sweep.__main__ import main as sweep_main
from tests.support.synthetic import write_feature_dir


def _one_line(argv: list[str], capsys) -> str:
    rc = sweep_main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (rc, err)
    return lines[0]


def test_derived_seeds_past_2_32_are_refused_before_ray(capsys):
    line = _one_line(["alphanet_k", f"seed={MAX_SEED}", "repeats=2"], capsys)
    assert f"seeds run to {MAX_SEED + 1}" in line and "lower seed" in line
    assert load(["alphanet_k", f"seed={MAX_SEED - 1}", "repeats=2"]).seeds == [MAX_SEED - 1,
                                                                             MAX_SEED]


@pytest.mark.parametrize("argv, needle", [
    (["swrm_window", "+space.beta=1e308"], "space.beta=1e+308"),
    (["swrm_window", "method.beta=1e308"], "beta"),
    (["dyswrm", "space.beta={type:float,low:0,high:1e308}"], "space.beta=1e+308"),
    (["dyswrm", "space.beta={type:float,low:0,high:1e7}"], "magnitude <= 1e+06"),
    (["dyswrm", "+method.s_lr=1e308"], "s_lr=1e+308"),
    (["alphanet_k", "+space.rho=inf"], "space.rho=inf"),
    (["lfm_alpha_tau", "method.logit_scale=nan"], "logit_scale=nan"),
])
def test_knob_values_no_float32_maths_survives_are_refused_before_ray(argv, needle, capsys):
    assert needle in _one_line(argv, capsys)


def test_knob_ranges_in_the_papers_ranges_pass():
    load(["dyswrm", "space.beta={type:float,low:0,high:900}"])  # large, yet finite maths
    load(["alphanet_k", "+space.rho={type:float,low:0.1,high:4}"])


def _forge_shape(npz_path: Path, array: str, shape: tuple[int, ...]) -> None:
    """Rewrite one array's .npy header inside an npz to claim ``shape`` (data unchanged)."""
    with zipfile.ZipFile(npz_path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    raw = members[f"{array}.npy"]
    header_len = int.from_bytes(raw[8:10], "little")
    header = raw[10:10 + header_len].decode("latin1")
    old = header[header.index("'shape': ") + 9:header.index(")") + 1]
    new = str(shape)
    forged = header.replace(old, new).replace(" " * (len(new) - len(old)) + "\n", "\n", 1)
    assert len(forged) == header_len
    members[f"{array}.npy"] = raw[:10] + forged.encode("latin1") + raw[10 + header_len:]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    npz_path.write_bytes(buf.getvalue())


def test_a_header_claiming_a_huge_array_is_a_clear_error(tmp_path):
    feats = write_feature_dir(tmp_path / "feats")
    _forge_shape(feats / "train.npz", "features", (10**12, 16))
    with pytest.raises(FeatureImportError) as err:
        import_feature_dir(str(feats))
    message = str(err.value)
    assert "train.npz" in message and "claims shape (1000000000000, 16)" in message
    assert "\n" not in message


def test_a_line_separator_inside_a_class_name_names_the_classes_file(tmp_path):
    feats = write_feature_dir(tmp_path / "feats")
    names = (feats / "classes.txt").read_text().splitlines()
    names[3] = "class\u2028three"
    (feats / "classes.txt").write_text("\n".join(names) + "\n")
    with pytest.raises(FeatureImportError) as err:
        import_feature_dir(str(feats))
    message = str(err.value)
    assert "classes.txt line 4" in message and "U+2028 (LINE SEPARATOR)" in message
    assert "train.npz" not in message and "\n" not in message and "\u2028" not in message


def test_windows_line_ends_and_tabs_in_names_still_read(tmp_path):
    feats = write_feature_dir(tmp_path / "feats")
    names = (feats / "classes.txt").read_text().splitlines()
    names[0] = "a\tname"
    (feats / "classes.txt").write_bytes(("\r\n".join(names) + "\r\n").encode())
    fset, _ = import_feature_dir(str(feats))
    assert fset.classes[0] == "a\tname" and len(fset.classes) == len(names)
    assert np.array_equal(fset.train.labels, np.load(feats / "train.npz")["labels"])
