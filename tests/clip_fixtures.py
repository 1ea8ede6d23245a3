"""Small recordings in the three layouts the clip_pairs dataset reads, written for tests.

Every file is made with NumPy from a seed and written with soundfile (44.1 kHz unless asked
otherwise): foreground "events" are harmonic tone bursts whose pitch depends on the class and
the recording, padded with digital silence as ESC-50's clips are; backgrounds are shaped noise.
The metadata CSVs have the real datasets' exact headers.

  write_esc50(root, classes, per_fold)             meta/esc50.csv + audio/*.wav, 5 s clips.
  write_fsd50k(root, labels, counts)               FSD50K.ground_truth/{dev,eval}.csv + audio.
  write_folders(root, classes, per_class, ext)     one folder of files per class.
  write_roots(base)                                every layout under base (the tests' roots).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence

import numpy as np
import soundfile as sf

SR = 44100
ESC50_HEADER = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]


def event_wave(
    class_index: int, variant: int, seconds: float, sr: int = SR, seed: int = 0
) -> np.ndarray:
    """A class's tone burst of `seconds` with silence around it: [round(seconds*sr)] float32."""
    rng = np.random.default_rng([seed, class_index, variant])
    n = int(round(seconds * sr))
    out = np.zeros(n, np.float32)
    active = int(min(n, rng.uniform(0.35, 0.75) * n))
    start = int(rng.integers(0, n - active + 1))
    t = np.arange(active) / sr
    f0 = 220.0 * 2.0 ** (0.5 * class_index) * (1.0 + 0.04 * variant)
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in (1, 2, 3))
    env = np.sin(np.pi * np.arange(active) / active) ** 0.5
    rate = rng.uniform(2.0, 6.0)  # a rhythm, so the level varies inside the active part
    env *= 0.6 + 0.4 * np.sin(2 * np.pi * rate * t)
    out[start : start + active] = (rng.uniform(0.25, 0.6) * tone * env / 1.8).astype(np.float32)
    return out


def background_wave(kind: int, variant: int, seconds: float, sr: int = SR) -> np.ndarray:
    """Shaped noise (kind 0: bright like rain, 1: a low rumble): [round(seconds*sr)] float32."""
    rng = np.random.default_rng([99, kind, variant])
    n = int(round(seconds * sr))
    x = rng.standard_normal(n)
    if kind == 0:
        x = np.diff(x, prepend=0.0)
    else:
        x = np.convolve(x, np.ones(40) / 40, mode="same")
    return (0.1 * x / np.sqrt(np.mean(x**2))).astype(np.float32)


def _write(path: str, wav: np.ndarray, sr: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, wav, sr, subtype="PCM_16")


def write_esc50(
    root: str, classes: Sequence[str], per_fold: int = 2, seconds: float = 5.0, sr: int = SR
) -> list[list[str]]:
    """ESC-50's layout: `per_fold` clips per class in each of folds 1-5. Returns the CSV rows."""
    rows = []
    for target, category in enumerate(classes):
        for fold in range(1, 6):
            for j in range(per_fold):
                src = f"{100000 + 1000 * target + 10 * fold + j}"
                name = f"{fold}-{src}-A-{target}.wav"
                variant = (fold - 1) * per_fold + j
                _write(
                    os.path.join(root, "audio", name),
                    event_wave(target, variant, seconds, sr),
                    sr,
                )
                rows.append([name, str(fold), str(target), category, "False", src, "A"])
    os.makedirs(os.path.join(root, "meta"), exist_ok=True)
    with open(os.path.join(root, "meta", "esc50.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(ESC50_HEADER)
        writer.writerows(rows)
    return rows


def write_fsd50k(
    root: str,
    labels: Mapping[str, str],
    counts: tuple[int, int, int] = (2, 1, 1),
    *,
    background: bool = True,
    sr: int = SR,
) -> None:
    """FSD50K's layout. labels: class -> the `labels` field of its clips ("Rain,Water");
    counts: clips per class in dev/train, dev/val and eval; clips last 1.5-6 s."""
    dev, evals = [], []
    fname = 1000
    for kind, field in enumerate(labels.values()):
        for split, n in zip(("train", "val", "eval"), counts, strict=True):
            for _ in range(n):
                fname += 1
                seconds = 1.5 + (fname * 7919 % 45) / 10.0
                wav = (
                    background_wave(kind % 2, fname, seconds, sr)
                    if background
                    else event_wave(kind, fname, seconds, sr)
                )
                audio = "FSD50K.eval_audio" if split == "eval" else "FSD50K.dev_audio"
                _write(os.path.join(root, audio, f"{fname}.wav"), wav, sr)
                mids = ",".join(f"/m/{k:04d}" for k in range(len(field.split(","))))
                if split == "eval":
                    evals.append([str(fname), field, mids])
                else:
                    dev.append([str(fname), field, mids, split])
    truth = os.path.join(root, "FSD50K.ground_truth")
    os.makedirs(truth, exist_ok=True)
    for name, header, rows in (
        ("dev.csv", ["fname", "labels", "mids", "split"], dev),
        ("eval.csv", ["fname", "labels", "mids"], evals),
    ):
        with open(os.path.join(truth, name), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)


def write_folders(
    root: str,
    classes: Sequence[str],
    per_class: int = 8,
    ext: str = ".flac",
    *,
    background: bool = False,
    seconds: float = 2.0,
    sr: int = SR,
) -> None:
    """One sub-folder per class holding `per_class` files of `seconds` (format from `ext`)."""
    for k, cls in enumerate(classes):
        for j in range(per_class):
            wav = (
                background_wave(k % 2, j, seconds, sr)
                if background
                else event_wave(k, j, seconds, sr, seed=1)
            )
            _write(os.path.join(root, cls, f"{cls.lower()}_{j:03d}{ext}"), wav, sr)


# The classes of the ESC-50 and folder-layout recordings of `write_roots`.
ESC_CLASSES = ("dog", "church_bells", "crying_baby")
FOLDER_CLASSES = ("Dog", "Sea waves", "hen")


def write_roots(base: str) -> dict[str, str]:
    """Recordings in every layout under base: ESC-50 events ("esc"), FSD50K backgrounds
    ("fsd"), folder events ("folders") and backgrounds ("folder_bg"); -> name: directory."""
    out = {k: os.path.join(base, k) for k in ("esc", "fsd", "folders", "folder_bg")}
    write_esc50(out["esc"], ESC_CLASSES, per_fold=2)
    write_fsd50k(out["fsd"], {"Rain": "Rain,Water", "Car_passing_by": "Car_passing_by,Vehicle"})
    write_folders(out["folders"], FOLDER_CLASSES, per_class=8, ext=".flac")
    write_folders(out["folder_bg"], ("rain",), per_class=3, ext=".wav", background=True)
    return out
