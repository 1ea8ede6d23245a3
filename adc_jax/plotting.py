"""Figures: the encoder's cross-clip attention over two spectrograms, and training curves.

`plot_attention` draws the paper's attention figure for one pair: for every difference-encoder
layer, the head-averaged attention of clip 1's frames to clip 2's frames ([T1, T2] block) and of
clip 2's frames to clip 1's ([T2, T1] block). Each block has the key clip's log-mel spectrogram
above it and the query clip's at its side, with time in seconds on both axes, so a bright cell
reads "this moment of one clip looked at that moment of the other". One colour bar serves every
panel; the caption is the title.

`plot_training` reads `workdir/metrics.jsonl` (written by train.py) and draws loss terms, learning
rate, gradient norm, token accuracy, throughput and the periodic eval scores (with the
most-frequent-caption baseline dashed) over steps.

Both use matplotlib's Agg backend (no display needed) and return the path of the PNG written.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import numpy as np


def _pyplot():
    """matplotlib.pyplot on the Agg backend (selected before pyplot is first imported)."""
    # Imported here, not at the top: importing this module must not select a backend for the
    # whole process (a notebook that imports adc_jax.caption keeps its inline backend).
    import matplotlib

    if "matplotlib.pyplot" not in __import__("sys").modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_attention(
    attention: np.ndarray,
    mel1: np.ndarray,
    mel2: np.ndarray,
    *,
    frames1: int,
    frames2: int,
    frame_seconds: float,
    mel_seconds: float,
    path: str,
    caption: str = "",
    names: Sequence[str] = ("clip 1", "clip 2"),
    dpi: int = 100,
) -> str:
    """Draws each encoder layer's cross-clip attention blocks over the clips' spectrograms.

    Args:
      attention: [layers, 2T, 2T] head-averaged encoder attention (rows: query frames; clip 1's
        T frames first, then clip 2's).
      mel1, mel2: [T_mel, M] log-mel spectrograms of the two (padded) clips.
      frames1, frames2: valid encoder frames of each clip (padding frames are not drawn).
      frame_seconds: duration of one encoder frame in seconds (hop * 8 / sample rate).
      mel_seconds: duration of one log-mel frame in seconds (hop / sample rate).
      path: PNG file to write (its directory is created).
      caption: drawn as the title.
      names: labels of the two clips (e.g. file names).
      dpi: resolution of the PNG.

    Returns:
      `path`.
    """
    plt = _pyplot()
    from matplotlib import gridspec  # after _pyplot(), for the same reason

    attention = np.asarray(attention, np.float32)
    if attention.ndim != 3 or attention.shape[1] != attention.shape[2]:
        raise ValueError(f"attention must be [layers, 2T, 2T], got shape {attention.shape}.")
    layers, total = attention.shape[0], attention.shape[1]
    t = total // 2
    frames1, frames2 = max(1, min(frames1, t)), max(1, min(frames2, t))
    d1, d2 = frames1 * frame_seconds, frames2 * frame_seconds
    m1 = np.asarray(mel1)[: max(1, round(d1 / mel_seconds))]
    m2 = np.asarray(mel2)[: max(1, round(d2 / mel_seconds))]
    # Block A: clip 1 queries (rows) x clip 2 keys; block B: clip 2 queries x clip 1 keys.
    blocks = [
        (attention[i, :frames1, t : t + frames2], attention[i, t : t + frames2, :frames1])
        for i in range(layers)
    ]
    vmax = max(float(b.max()) for pair in blocks for b in pair) or 1.0
    mel_lo = float(min(m1.min(), m2.min()))
    mel_hi = float(max(m1.max(), m2.max()))

    fig = plt.figure(figsize=(12.0, 2.4 + 4.2 * layers), dpi=dpi)
    # Columns: query spectrogram, block A, spacer, query spectrogram, block B, spacer, colour bar.
    grid = gridspec.GridSpec(
        1 + layers,
        7,
        figure=fig,
        width_ratios=[0.9, 4, 0.55, 0.9, 4, 0.15, 0.18],
        height_ratios=[1.1] + [4] * layers,
        wspace=0.08,
        hspace=0.22,
        left=0.06,
        right=0.94,
        top=1 - 1.1 / (2.4 + 4.2 * layers),
        bottom=0.6 / (2.4 + 4.2 * layers),
    )
    mel_kw = dict(aspect="auto", cmap="magma", vmin=mel_lo, vmax=mel_hi, interpolation="nearest")
    att_kw = dict(aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
    columns = (
        (1, m2, d2, m1, d1, f"{names[0]} \u2192 {names[1]}", names[1], names[0]),
        (4, m1, d1, m2, d2, f"{names[1]} \u2192 {names[0]}", names[0], names[1]),
    )
    image = None
    for col, (
        gcol,
        key_mel,
        key_dur,
        query_mel,
        query_dur,
        title,
        key_name,
        query_name,
    ) in enumerate(columns):
        top = fig.add_subplot(grid[0, gcol])
        top.imshow(key_mel.T, origin="lower", extent=(0, key_dur, 0, key_mel.shape[1]), **mel_kw)
        top.set_title(f"{title}\n(keys: {key_name})", fontsize=10)
        top.set_ylabel("mel", fontsize=8)
        top.tick_params(labelbottom=False, labelsize=7)
        for layer in range(layers):
            ax = fig.add_subplot(grid[1 + layer, gcol], sharex=top)
            image = ax.imshow(
                blocks[layer][col], origin="upper", extent=(0, key_dur, query_dur, 0), **att_kw
            )
            ax.tick_params(labelleft=False, labelsize=8)
            if layer == layers - 1:
                ax.set_xlabel(f"{key_name} time (s)", fontsize=9)
            else:
                ax.tick_params(labelbottom=False)
            side = fig.add_subplot(grid[1 + layer, gcol - 1], sharey=ax)
            side.imshow(
                query_mel, origin="upper", extent=(0, query_mel.shape[1], query_dur, 0), **mel_kw
            )
            side.set_ylabel(f"layer {layer + 1}: {query_name} time (s)", fontsize=9)
            side.tick_params(labelsize=7)
            side.set_xticks([])
            if layer == layers - 1:
                side.set_xlabel("mel", fontsize=8)
    cbar_ax = fig.add_subplot(grid[1:, 6])
    fig.colorbar(image, cax=cbar_ax).set_label("attention weight (mean over heads)", fontsize=9)
    fig.suptitle(
        f"\u201c{caption}\u201d" if caption else "Encoder attention",
        fontsize=13,
        y=1 - 0.25 / (2.4 + 4.2 * layers),
    )
    _save(fig, path)
    return path


def _save(fig, path: str) -> None:
    plt = _pyplot()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------------------- training curves


def read_metrics(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """metrics.jsonl -> {name: (steps, values)}, the last value of a step winning (resumed runs).

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: the file holds no metrics.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: metrics.jsonl is written by training "
            "(python -m adc_jax.main --workdir=DIR)."
        )
    series: dict[str, dict[int, float]] = {}
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {line_no} is not JSON ({e}).") from e
            step = int(record["step"])
            for key, value in record.items():
                if key == "step" or not isinstance(value, (int, float)) or value is None:
                    continue
                series.setdefault(key, {})[step] = float(value)
    if not series:
        raise ValueError(f"{path} holds no metrics yet.")
    out = {}
    for key, by_step in series.items():
        steps = np.asarray(sorted(by_step))
        out[key] = (steps, np.asarray([by_step[s] for s in steps]))
    return out


# Panels of the training figure: (title, metric names, y-scale).
TRAINING_PANELS = (
    (
        "Loss terms",
        (
            "train/loss",
            "train/caption_loss",
            "train/sdd_loss",
            "train/similar_loss",
            "train/discrepant_loss",
        ),
        "log",
    ),
    ("Learning rate", ("train/learning_rate",), "linear"),
    ("Gradient norm (before clipping)", ("train/grad_norm",), "log"),
    ("Token accuracy (teacher forced)", ("train/token_accuracy",), "linear"),
    ("Throughput (pairs/s)", ("train/pairs_per_second",), "linear"),
    (
        "Eval scores",
        (
            "eval/BLEU_1",
            "eval/BLEU_4",
            "eval/METEOR",
            "eval/ROUGE_L",
            "eval/CIDEr",
            "eval/SPIDEr",
            "eval/difference_accuracy",
            "eval/baseline_CIDEr",
        ),
        "linear",
    ),
)


def plot_training(metrics_path: str, path: str, *, title: str = "", dpi: int = 100) -> str:
    """Draws the training curves of a run to one PNG (panels without data are left out).

    Args:
      metrics_path: the run's metrics.jsonl.
      path: PNG file to write.
      title: figure title (e.g. the workdir).
      dpi: resolution.

    Returns:
      `path`.
    """
    plt = _pyplot()
    series = read_metrics(metrics_path)
    panels = [(t, [n for n in names if n in series], scale) for t, names, scale in TRAINING_PANELS]
    panels = [p for p in panels if p[1]]
    cols = 3 if len(panels) > 4 else 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), dpi=dpi, squeeze=False)
    for ax, (panel_title, names, scale) in zip(axes.flat, panels, strict=False):
        for name in names:
            steps, values = series[name]
            label = name.split("/", 1)[1]
            dashed = name == "eval/baseline_CIDEr"
            ax.plot(
                steps,
                values,
                "--" if dashed else "-",
                marker="o" if len(steps) < 30 else None,
                markersize=3,
                label=("baseline CIDEr (most frequent caption)" if dashed else label),
            )
        positive = all(np.all(series[n][1] > 0) for n in names)
        ax.set_yscale(scale if scale != "log" or positive else "linear")
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if len(names) > 1:
            ax.legend(fontsize=7)
    first = min(float(v[0][0]) for v in series.values())
    last = max(float(v[0][-1]) for v in series.values())
    margin = max((last - first) * 0.03, 0.5)
    for ax in list(axes.flat)[: len(panels)]:
        ax.set_xlim(first - margin, last + margin)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    _save(fig, path)
    return path
