"""Tests of adc_jax.plotting and tools/plot_training.py on small synthetic inputs (no model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from adc_jax import plotting

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _image_size(path: str) -> tuple[int, int]:
    import matplotlib.image

    height, width = matplotlib.image.imread(path).shape[:2]
    return width, height


def test_attention_figure_size_grows_with_layers(tmp_path):
    rng = np.random.default_rng(0)
    t = 12
    sizes = []
    for layers in (1, 2):
        attention = rng.random((layers, 2 * t, 2 * t))
        attention /= attention.sum(-1, keepdims=True)
        path = plotting.plot_attention(
            attention,
            rng.standard_normal((101, 64)),
            rng.standard_normal((101, 64)),
            frames1=12,
            frames2=9,
            frame_seconds=0.08,
            mel_seconds=0.01,
            path=str(tmp_path / f"att{layers}.png"),
            caption="make the dog louder",
            names=("a.wav", "b.wav"),
        )
        assert os.path.getsize(path) > 20_000
        sizes.append(_image_size(path))
    assert sizes[0][0] == sizes[1][0] == 1200
    assert sizes[1][1] > sizes[0][1] + 300
    with pytest.raises(ValueError, match="layers, 2T, 2T"):
        plotting.plot_attention(
            np.zeros((4, 4)),
            np.zeros((5, 8)),
            np.zeros((5, 8)),
            frames1=2,
            frames2=2,
            frame_seconds=0.1,
            mel_seconds=0.01,
            path=str(tmp_path / "x.png"),
        )


def test_read_metrics_keeps_the_last_value_of_a_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [
        {"step": 1, "train/loss": 3.0},
        {"step": 2, "train/loss": 2.0},
        {"step": 2, "train/loss": 1.5},  # a resumed run logged step 2 again
        {"step": 2, "eval/CIDEr": 0.1, "eval/SPIDEr": None},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    series = plotting.read_metrics(str(path))
    np.testing.assert_array_equal(series["train/loss"][0], [1, 2])
    np.testing.assert_array_equal(series["train/loss"][1], [3.0, 1.5])
    assert "eval/SPIDEr" not in series and series["eval/CIDEr"][1].tolist() == [0.1]


def test_plot_training_tool(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    records = [
        {
            "step": s,
            "train/loss": 5.0 / s,
            "train/caption_loss": 4.0 / s,
            "train/sdd_loss": 1.0 / s,
            "train/learning_rate": 1e-3 * min(s, 10) / 10,
            "train/grad_norm": 2.0,
            "train/token_accuracy": s / 50,
        }
        for s in range(1, 51)
    ]
    records += [
        {"step": s, "eval/CIDEr": s / 100, "eval/BLEU_4": s / 200, "eval/baseline_CIDEr": 0.2}
        for s in (25, 50)
    ]
    (workdir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    tool = os.path.join(REPO_ROOT, "tools", "plot_training.py")
    proc = subprocess.run(
        [sys.executable, tool, str(workdir)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    png = workdir / "plots" / "training.png"
    assert png.stat().st_size > 20_000
    width, height = _image_size(str(png))
    assert width > 1000 and height > 500
    proc = subprocess.run(
        [sys.executable, tool, str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "metrics.jsonl" in proc.stderr
