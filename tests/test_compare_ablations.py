"""Tests of tools/compare_ablations.py: seed-paired differences between two ablation grids.

What is checked: seeds are paired by number (only those both grids finished), the mean
difference, Student-t interval and p-value equal scipy's paired t-test, a constant difference
gets a zero-width interval, metrics a seed lacks are skipped, and the CLI prints the table, writes
the JSON and exits 2 with a message for grids it cannot pair.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
from tool_modules import load_tool


@pytest.fixture(scope="module")
def tool():
    return load_tool("compare_ablations")


def _grid(path, per_system: dict[str, dict[int, dict]]) -> str:
    """Writes an ablation.json holding `per_system`: system -> seed -> column -> value."""
    systems = {
        name: {"per_seed": {str(s): values for s, values in seeds.items()}}
        for name, seeds in per_system.items()
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "ablation.json").write_text(json.dumps({"systems": systems}))
    return str(path)


def test_seeds_are_paired_and_the_test_is_scipys(tool, tmp_path, capsys):
    cider_a = {0: 1.0, 1: 1.2, 2: 0.9, 3: 1.1}
    cider_b = {0: 1.1, 1: 1.25, 2: 1.05, 4: 9.0}  # seed 3 missing in B, seed 4 not in A
    a = _grid(
        tmp_path / "a",
        {
            "late_sdd": {
                s: {"CIDEr": v, "diff. acc.": 0.1, "swap cons.": None} for s, v in cider_a.items()
            },
            "cac": {0: {"CIDEr": 1.0}, 1: {"CIDEr": 1.0}},
        },
    )
    b = _grid(
        tmp_path / "b",
        {
            "late_sdd": {
                s: {"CIDEr": v, "diff. acc.": 0.15, "swap cons.": 0.2} for s, v in cider_b.items()
            }
        },
    )
    rows = tool.compare(tool.read_grid(a), tool.read_grid(b), ["CIDEr", "diff. acc.", "swap cons."])
    assert [(r["system"], r["metric"]) for r in rows] == [
        ("late_sdd", "CIDEr"),
        ("late_sdd", "diff. acc."),
    ]
    cider = rows[0]
    x, y = np.array([1.0, 1.2, 0.9]), np.array([1.1, 1.25, 1.05])
    assert cider["seeds"] == [0, 1, 2]
    assert cider["per_seed"] == pytest.approx(list(y - x))
    assert cider["difference"] == pytest.approx((y - x).mean())
    assert cider["p_value"] == pytest.approx(scipy.stats.ttest_rel(y, x).pvalue)
    half = scipy.stats.t.ppf(0.975, 2) * (y - x).std(ddof=1) / np.sqrt(3)
    assert (cider["lo"], cider["hi"]) == pytest.approx(
        ((y - x).mean() - half, (y - x).mean() + half)
    )
    assert cider["b_higher"] == 3 and cider["a"] == pytest.approx(x.mean())
    constant = rows[1]  # +0.05 on every seed: no spread
    assert constant["lo"] == constant["hi"] == pytest.approx(0.05) and constant["p_value"] == 0.0
    json_out = str(tmp_path / "paired.json")
    assert (
        tool.main(
            [a, b, "--metrics=CIDEr", "--name_a=random", "--name_b=pre", f"--json_out={json_out}"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| system | metric | random | pre | pre − random [95%]" in out
    assert (
        "| late_sdd | CIDEr | 1.033 | 1.133 | +0.100 [" in out
        and "| 3/3 | +0.100, +0.050, +0.150 |" in out
    )
    assert json.load(open(json_out))["rows"][0]["seeds"] == [0, 1, 2]


def test_grids_that_cannot_be_paired_exit_2_with_a_message(tool, tmp_path, capsys):
    a = _grid(tmp_path / "a", {"cac": {0: {"CIDEr": 1.0}, 1: {"CIDEr": 1.1}}})
    b = _grid(tmp_path / "b", {"late_sdd": {0: {"CIDEr": 1.0}, 1: {"CIDEr": 1.1}}})
    one_seed = _grid(tmp_path / "c", {"cac": {0: {"CIDEr": 1.0}, 7: {"CIDEr": 1.1}}})
    assert tool.main([a, b]) == 2
    assert "share no system" in capsys.readouterr().err
    assert tool.main([a, one_seed]) == 2
    assert "a paired test needs 2 or more" in capsys.readouterr().err
    assert tool.main([a, str(tmp_path / "missing")]) == 2
    assert "--table_only" in capsys.readouterr().err
    assert tool.main([a, b, "--metrics=BLEU-9"]) == 2
    assert "unknown metric" in capsys.readouterr().err
