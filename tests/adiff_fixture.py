"""A tiny ADIFF copy in the published layout, for the builder's tests and end-to-end runs.

No ADIFF, Clotho or AudioCaps file ships with adc_jax; `make_adiff_fixture(root, subset, ...)`
writes one that looks like the real thing:

  ROOT/csv/{subset}_{split}_adiff_{fewwords,sentence,detail}_answer.csv
      header taskname,filepath1,filepath2,caption1,caption2,input,answer
  ROOT/audio/ClothoV21/{development,validation,evaluation}/<name>.wav     (cld)
  ROOT/audio/AudioCapsLarger/{train,val,test}/Y<id>.wav                  (acd)

The WAVs are 16-bit, 44.1 kHz, `seconds` long (evenly spread from the shortest to the longest;
one is stereo), each a different tone in noise. With `quirks=True` (the default) the files have
the real ones' quirks: Clotho-style names with spaces, commas, parentheses, an apostrophe, a
semicolon and a non-ASCII letter; answers holding commas, double quotes, a line break and runs of
spaces (so fields are quoted); a UTF-8 BOM before the train split's tier-1 header; in every
split the first pair listed a second time, at the end of the tier-1 CSV, with another answer;
and the last pair left out of the tier-2 CSV.

`AdiffFixture.expected` says what the builder must store: split -> key -> [(tier, answer)], keys
in the order pairs first occur (tier 1's CSV first), answers in tier order and then CSV order,
whitespace collapsed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os

import numpy as np
import soundfile as sf

SPLIT_FILES = {
    "acd": {"train": "train", "validation": "val", "eval": "test"},
    "cld": {"train": "development", "validation": "validation", "eval": "evaluation"},
}
TIER_NAMES = {1: "fewwords", 2: "sentence", 3: "detail"}
PROMPTS = {
    1: "explain the difference in few words",
    2: "explain the difference in a sentence",
    3: "explain the difference in detail",
}
HEADER = ("taskname", "filepath1", "filepath2", "caption1", "caption2", "input", "answer")
SOUNDS = (
    "birds chirping near a quiet road",
    "rain falling on a tin roof",
    "a dog barking twice, then silence",
    "footsteps on gravel",
    "a car passing by at speed",
    "church bells ringing in the distance",
    "wind howling through trees",
    "people talking in a busy cafe",
)
CLOTHO_NAMES = (
    "Birds singing, distant traffic (2)",
    "Rain on a tin roof - close",
    "dog's bark 03",
    "Footsteps; gravel path",
    "car passing 1",
    "Église bells",
    "wind_in_trees.02",
    "Cafe ambience, Lisbon",
)


@dataclasses.dataclass(frozen=True)
class FixtureRow:
    """One written CSV row: the line it starts on (header = 1) and its fields."""

    line: int
    filepath1: str
    filepath2: str
    answer: str  # as written (not cleaned)


@dataclasses.dataclass
class AdiffFixture:
    root: str
    csv_dir: str
    audio_dir: str
    subset: str
    # split -> key "<filepath1>|<filepath2>" -> [(tier, cleaned answer)], in stored order.
    expected: dict[str, dict[str, list[tuple[int, str]]]]
    # split -> tier -> the rows written to that CSV, in file order.
    rows: dict[str, dict[int, list[FixtureRow]]]
    # split -> CSV filepath -> the WAV file written for it.
    clips: dict[str, dict[str, str]]
    # split -> CSV filepath -> its length in seconds.
    seconds: dict[str, dict[str, float]]

    def csv_path(self, split: str, tier: int) -> str:
        name = f"{self.subset}_{SPLIT_FILES[self.subset][split]}_adiff_{TIER_NAMES[tier]}"
        return os.path.join(self.csv_dir, name + "_answer.csv")


def _clip_name(subset: str, split: str, i: int, quirks: bool) -> str:
    if subset == "cld":
        base = CLOTHO_NAMES[i % len(CLOTHO_NAMES)] if quirks else f"clip_{i:03d}"
        suffix = f" {i // len(CLOTHO_NAMES)}" if i >= len(CLOTHO_NAMES) else ""
        folder = SPLIT_FILES[subset][split]
        return f"{base}{suffix} {folder[:3]}.wav" if quirks else f"{base}_{folder}.wav"
    return f"Y{split[:2]}-{i:03d}_x{i * 7 % 10}Q.wav"  # AudioSet-style YouTube ids


def _answer(tier: int, split: str, index: int, a: str, b: str, quirks: bool) -> str:
    tag = f"({split} pair {index})"
    if tier == 1:
        return f"Audio 1 has {a}, audio 2 has {b} {tag}."
    if tier == 2:
        text = f"The first audio features {a}, whereas the second audio contains {b} {tag}."
        return text.replace(", whereas", ",   whereas") if quirks else text
    text = (
        f"The first recording captures {a}, with a steady acoustic backdrop. "
        f'The second recording, by contrast, presents {b}; it sounds "closer" and '
        f"more reverberant {tag}. Overall the two scenes differ in their sources and in "
        "their loudness over time."
    )
    return text.replace("; it sounds", ";\nit sounds") if quirks else text


def _pairs(num_clips: int, num_pairs: int) -> list[tuple[int, int]]:
    if num_clips < 2 or num_pairs > num_clips * (num_clips - 1):
        raise ValueError(f"{num_clips} clips give at most {num_clips * (num_clips - 1)} pairs.")
    out = []
    for offset in range(1, num_clips):
        for i in range(num_clips):
            if len(out) < num_pairs:
                out.append((i, (i + offset) % num_clips))
    return out


def _write_csv(path: str, rows: list[tuple[str, ...]], bom: bool) -> list[int]:
    """Writes HEADER and rows; returns the line each row starts on."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    lines = []
    for row in rows:
        lines.append(buffer.getvalue().count("\n") + 1)
        writer.writerow(row)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(("\ufeff" if bom else "") + buffer.getvalue())
    return lines


def make_adiff_fixture(
    root: str,
    subset: str = "cld",
    *,
    splits: tuple[str, ...] = ("train", "validation", "eval"),
    tiers: tuple[int, ...] = (1, 2, 3),
    num_clips: int = 6,
    num_pairs: int = 8,
    seconds: tuple[float, float] = (1.0, 3.0),
    sample_rate: int = 44100,
    quirks: bool = True,
    seed: int = 0,
) -> AdiffFixture:
    """Writes CSVs and WAVs under ROOT/csv and ROOT/audio (see the module docstring)."""
    if subset not in SPLIT_FILES:
        raise ValueError(f"subset {subset!r} is not 'acd' or 'cld'.")
    rng = np.random.default_rng(seed)
    csv_dir, audio_dir = os.path.join(root, "csv"), os.path.join(root, "audio")
    os.makedirs(csv_dir, exist_ok=True)
    top = "ClothoV21" if subset == "cld" else "AudioCapsLarger"
    fixture = AdiffFixture(root, csv_dir, audio_dir, subset, {}, {}, {}, {})
    for split in splits:
        folder = SPLIT_FILES[subset][split]
        os.makedirs(os.path.join(audio_dir, top, folder), exist_ok=True)
        filepaths, clips, lengths = [], {}, {}
        for i, duration in enumerate(np.linspace(*seconds, num_clips)):
            filepath = f"{top}/{folder}/{_clip_name(subset, split, i, quirks)}"
            n = int(round(duration * sample_rate))
            t = np.arange(n) / sample_rate
            tone = 0.3 * np.sin(2 * np.pi * (220.0 + 55.0 * i) * t)
            x = tone + 0.05 * rng.standard_normal(n)
            if i == 1:
                x = np.stack([x, 0.5 * x], axis=1)  # one stereo file
            path = os.path.join(audio_dir, *filepath.split("/"))
            sf.write(path, x, sample_rate, subtype="PCM_16")
            filepaths.append(filepath)
            clips[filepath], lengths[filepath] = path, n / sample_rate
        fixture.clips[split], fixture.seconds[split] = clips, lengths
        pairs = _pairs(num_clips, num_pairs)
        expected: dict[str, list[tuple[int, str]]] = {}
        fixture.rows[split] = {}
        for tier in sorted(tiers):
            # (pair index, answer) in file order, with the quirks' repeat and omission.
            listed = [
                (k, _answer(tier, split, k, *_sounds(i, j), quirks))
                for k, (i, j) in enumerate(pairs)
            ]
            if quirks and tier == 1:
                listed.append((0, f"Audio 2 adds {SOUNDS[pairs[0][1] % len(SOUNDS)]} ({split})."))
            if quirks and tier == 2 and len(pairs) >= 2:
                listed = [(k, a) for k, a in listed if k != len(pairs) - 1]
            csv_rows = []
            for k, answer in listed:
                i, j = pairs[k]
                a, b = _sounds(i, j)
                csv_rows.append(
                    ("difference", filepaths[i], filepaths[j], a, b, PROMPTS[tier], answer)
                )
            lines = _write_csv(
                fixture.csv_path(split, tier),
                csv_rows,
                bom=quirks and split == "train" and tier == 1,
            )
            fixture.rows[split][tier] = [
                FixtureRow(line, r[1], r[2], r[6]) for line, r in zip(lines, csv_rows, strict=True)
            ]
            for r in fixture.rows[split][tier]:
                key = f"{r.filepath1}|{r.filepath2}"
                expected.setdefault(key, []).append((tier, " ".join(r.answer.split())))
        fixture.expected[split] = expected
    return fixture


def _sounds(i: int, j: int) -> tuple[str, str]:
    return SOUNDS[i % len(SOUNDS)], SOUNDS[j % len(SOUNDS)]
