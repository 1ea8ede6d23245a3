"""Disk and build time of an ADIFF build at benchmark shape, on generated audio in ADIFF's layout.

  python tools/benchmark_pair_storage.py --shape=acd --root=/tmp/acd_shape
  python tools/benchmark_pair_storage.py --shape=cld --root=/tmp/cld_shape

ADIFF's pairs recur over the same clips: ACD has ~48k training pairs over AudioCaps clips that
appear in many pairs, CLD's 1,045 Clotho evaluation clips serve 5,225 pairs. The two shapes:

  acd   train: 20,000 pairs over 4,000 clips of 10 s (built with clip_seconds=10, as
        configs/adiff.py:acd does);
  cld   evaluation: 5,225 pairs over 1,045 clips of 15-30 s (clip_seconds=30, as
        configs/adiff.py:cld), plus a small development split (the build needs a training CSV).

The first run writes ROOT/csv (the three tiers' CSVs, ADIFF's header and file names; answers of
about ADIFF's lengths: 6, 20 and 80 words) and ROOT/audio (16-bit WAVs of noise at
--sample_rate, in AudioCapsLarger/ or ClothoV21/); later runs reuse them. Then the dataset is
built into ROOT/data (removed first, so the build is timed from scratch) with whichever adc_jax
is imported, and the bytes of every split on disk are counted. Prints a table and one JSON line.
Run the same command with an older checkout on the same ROOT to compare storage layouts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from adc_jax.data import adiff  # noqa: E402

# shape -> (subset, {split: (pairs, clips, (shortest s, longest s))}, clip_seconds of the build)
SHAPES = {
    "acd": ("acd", {"train": (20000, 4000, (10.0, 10.0))}, 10.0),
    "cld": (
        "cld",
        {"train": (40, 20, (15.0, 30.0)), "eval": (5225, 1045, (15.0, 30.0))},
        30.0,
    ),
}
# Words of a generated answer per tier (about ADIFF's medians).
ANSWER_WORDS = {1: 6, 2: 20, 3: 80}
WORDS = (
    "audio one has louder rain while the second clip adds a dog barking near a busy road with "
    "birds and distant traffic the first sounds closer and brighter than the other"
).split()


def _answer(rng: np.random.Generator, tier: int) -> str:
    return " ".join(rng.choice(WORDS, ANSWER_WORDS[tier])).capitalize() + "."


def _pairs(rng: np.random.Generator, num_pairs: int, num_clips: int) -> list[tuple[int, int]]:
    """`num_pairs` distinct ordered pairs of different clips, every clip in at least one."""
    pairs, seen = [], set()
    order = rng.permutation(num_clips)
    for a, b in zip(order, np.roll(order, 1), strict=True):  # a cycle covers every clip
        pairs.append((int(a), int(b)))
        seen.add((int(a), int(b)))
    while len(pairs) < num_pairs:
        a, b = (int(x) for x in rng.integers(num_clips, size=2))
        if a != b and (a, b) not in seen:
            seen.add((a, b))
            pairs.append((a, b))
    return pairs[:num_pairs]


def make_fixture(root: str, shape: str, sample_rate: int, seed: int = 0) -> None:
    """Writes ROOT/csv and ROOT/audio for `shape` (see the module docstring)."""
    subset, splits, _ = SHAPES[shape]
    rng = np.random.default_rng(seed)
    top = "AudioCapsLarger" if subset == "acd" else "ClothoV21"
    folders = {
        "acd": {"train": "train", "validation": "val", "eval": "test"},
        "cld": {"train": "development", "validation": "validation", "eval": "evaluation"},
    }[subset]
    os.makedirs(os.path.join(root, "csv"), exist_ok=True)
    for split, (num_pairs, num_clips, (shortest, longest)) in splits.items():
        folder = os.path.join(root, "audio", top, folders[split])
        os.makedirs(folder, exist_ok=True)
        names = []
        for i, seconds in enumerate(np.linspace(shortest, longest, num_clips)):
            name = f"{top}/{folders[split]}/clip_{split}_{i:05d}.wav"
            n = int(round(seconds * sample_rate))
            wav = (0.1 * rng.standard_normal(n)).astype(np.float32)
            sf.write(os.path.join(root, "audio", name), wav, sample_rate, subtype="PCM_16")
            names.append(name)
        pairs = _pairs(rng, num_pairs, num_clips)
        for tier in (1, 2, 3):
            path = adiff.csv_path(os.path.join(root, "csv"), subset, split, tier)
            with open(path, "w", encoding="utf-8", newline="") as f:
                out = csv.writer(f, lineterminator="\n")
                out.writerow(adiff.COLUMNS)
                for a, b in pairs:
                    out.writerow(
                        ("difference", names[a], names[b], "a sound", "another sound",
                         "explain the difference", _answer(rng, tier))
                    )  # fmt: skip


def _bytes_under(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(path)
        for name in names
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
    parser.add_argument("--root", required=True, help="folder for the fixture and the build")
    parser.add_argument("--sample_rate", type=int, default=16000, help="of the generated WAVs")
    parser.add_argument("--num_workers", type=int, default=None, help="decoding processes")
    parser.add_argument("--json_out", default=None, help="append the JSON line to this file")
    args = parser.parse_args(argv)
    subset, splits, clip_seconds = SHAPES[args.shape]
    root = os.path.abspath(args.root)
    if not os.path.isdir(os.path.join(root, "csv")):
        start = time.perf_counter()
        make_fixture(root, args.shape, args.sample_rate)
        print(f"generated the {args.shape} fixture in {time.perf_counter() - start:.1f} s")
    data_dir = os.path.join(root, "data")
    shutil.rmtree(data_dir, ignore_errors=True)
    start = time.perf_counter()
    builder = adiff.build_adiff(
        data_dir,
        csv_dir=os.path.join(root, "csv"),
        audio_dir=os.path.join(root, "audio"),
        subset=subset,
        clip_seconds=clip_seconds,
        num_workers=args.num_workers,
    )
    build_s = time.perf_counter() - start
    by_split = {name: int(info.num_bytes) for name, info in builder.info.splits.items()}
    result = {
        "shape": args.shape,
        "adiff_version": str(builder.VERSION),
        "splits": {s: {"pairs": n, "clips": c} for s, (n, c, _) in splits.items()},
        "split_bytes": by_split,
        "dataset_bytes_on_disk": _bytes_under(os.fspath(builder.data_dir)),
        "source_audio_bytes": _bytes_under(os.path.join(root, "audio")),
        "build_s": round(build_s, 1),
        "cpu_count": os.cpu_count(),
    }
    for name, value in result.items():
        print(f"{name:24s} {value}")
    line = json.dumps(result)
    print(line)
    if args.json_out:
        with open(args.json_out, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
