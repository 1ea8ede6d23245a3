"""The user's recordings behind the clip_pairs dataset: finding them, their classes and splits.

A directory of recordings is in one of three layouts, detected from what it holds:

  esc50    ESC-50: meta/esc50.csv (filename,fold,target,category,esc10,src_file,take) and the
           WAVs in audio/<filename> (5 s, 44.1 kHz, mono; 40 per class in 5 folds).
  fsd50k   FSD50K: FSD50K.ground_truth/dev.csv (fname,labels,mids,split) and eval.csv
           (fname,labels,mids), audio in FSD50K.dev_audio/<fname>.wav and
           FSD50K.eval_audio/<fname>.wav (0.3-30 s). `labels` lists a clip's labels, comma
           separated ("Rain,Water"); a clip belongs to every class it lists.
  folders  one sub-folder per class holding audio files in any format libsndfile reads (nested
           folders inside a class folder count too); the folder name is the class label.

Splits never share a recording: ESC-50's folds 1-3 are train, fold 4 validation, fold 5 eval
(ESC-50 keeps the clips cut from one source recording in one fold); FSD50K's dev clips are train
or validation by their `split` column (train / val) and its eval clips are eval; in the folder
layout, validation and eval each take round(20%) of a class's files (at least 2 when the class
has 6 files or more, 1 when it has 3-5), the files with the smallest SHA-256 of their path, so
the split of a file does not depend on the listing order or on any random state.

Labels match case- and separator-insensitively (`normalize_label`: "car horn" == "car_horn" ==
"Car_horn").

Public API:
  detect_layout(root)                         "esc50", "fsd50k" or "folders" (or a clear error).
  index_sources(root) -> SourceIndex          every recording with its labels and split.
  select_classes(index, labels, ...)          the recordings of the requested classes per split.
  load_recording(path, sample_rate, role)     one decoded recording (events trimmed to their
                                              active part).
  active_region(wav, sample_rate)             where a recording is active.
  Recording, SourceIndex                      the index's records.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import os
from collections.abc import Iterable, Sequence

import numpy as np
from absl import logging

from adc_jax.data.audio_io import AudioError, load_audio
from adc_jax.data.errors import BadData, MissingData

LAYOUTS = ("esc50", "fsd50k", "folders")
SPLITS = ("train", "validation", "eval")

ESC50_CSV = os.path.join("meta", "esc50.csv")
ESC50_AUDIO = "audio"
ESC50_COLUMNS = ("filename", "fold", "category")
ESC50_HEADER = "filename,fold,target,category,esc10,src_file,take"
ESC50_FOLD_SPLITS = {1: "train", 2: "train", 3: "train", 4: "validation", 5: "eval"}
# Length of every ESC-50 clip (the nominal length for short-file checks).
ESC50_SECONDS = 5.0

FSD50K_TRUTH = "FSD50K.ground_truth"
FSD50K_DEV_CSV = os.path.join(FSD50K_TRUTH, "dev.csv")
FSD50K_EVAL_CSV = os.path.join(FSD50K_TRUTH, "eval.csv")
FSD50K_DEV_AUDIO = "FSD50K.dev_audio"
FSD50K_EVAL_AUDIO = "FSD50K.eval_audio"
FSD50K_DEV_COLUMNS = ("fname", "labels", "split")
FSD50K_EVAL_COLUMNS = ("fname", "labels")
FSD50K_SPLITS = {"train": "train", "val": "validation"}

# File name endings of the formats libsndfile reads that the folder layout picks up.
AUDIO_EXTENSIONS = (
    ".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".caf",
    ".w64", ".rf64",
)  # fmt: skip
# Folder layout: share of a class's files in validation and in eval each.
FOLDER_HELD_OUT_FRACTION = 0.2

# An event's active part: the 20 ms frames within this many dB of its loudest frame (as
# `sounds.active_rms` measures levels), from the first to the last of them.
ACTIVE_RANGE_DB = 20.0
ACTIVE_FRAME_SECONDS = 0.02
# A recording whose peak is below this (dBFS) is silent: it cannot be an event or a background.
SILENCE_DBFS = -80.0

ACCEPTED_LAYOUTS = (
    f"ESC-50 ({ESC50_CSV} + {ESC50_AUDIO}/), FSD50K ({FSD50K_DEV_CSV} + {FSD50K_EVAL_CSV}, "
    f"{FSD50K_DEV_AUDIO}/, {FSD50K_EVAL_AUDIO}/) or one sub-folder of audio files per class"
)
_LAYOUT_NAMES = {"esc50": "ESC-50", "fsd50k": "FSD50K", "folders": "folder-per-class"}


@dataclasses.dataclass(frozen=True)
class Recording:
    """One audio file of a source directory.

    path: relative to the directory; labels: its class labels as the data names them;
    split: "train", "validation" or "eval"; where: the metadata row naming it ("meta/esc50.csv
    line 12") or its path, for error messages.
    """

    path: str
    labels: tuple[str, ...]
    split: str
    where: str


@dataclasses.dataclass(frozen=True)
class SourceIndex:
    """Every recording of a directory, with its layout.

    root: the directory (absolute); layout: one of LAYOUTS; recordings: in metadata (or sorted
    path) order; metadata: the metadata files (relative paths; none in the folder layout);
    nominal_seconds: the length every file should have (ESC-50: 5 s), or None.
    """

    root: str
    layout: str
    recordings: tuple[Recording, ...] = dataclasses.field(repr=False)
    metadata: tuple[str, ...] = ()
    nominal_seconds: float | None = None

    @property
    def name(self) -> str:
        """E.g. "/data/ESC-50 (ESC-50 layout)", for messages."""
        return f"{self.root} ({_LAYOUT_NAMES[self.layout]} layout)"

    @functools.cached_property
    def labels(self) -> tuple[str, ...]:
        """The distinct labels of the directory, sorted."""
        return tuple(sorted({label for r in self.recordings for label in r.labels}))


@functools.lru_cache(maxsize=4096)
def normalize_label(label: str) -> str:
    """The form labels are matched in: lower case, runs of other characters as one "_"."""
    out, sep = [], False
    for ch in label.strip().lower():
        if ch.isalnum():
            if sep and out:
                out.append("_")
            out.append(ch)
            sep = False
        else:
            sep = True
    return "".join(out)


def _has_audio(folder: str) -> bool:
    for _, _, files in os.walk(folder):
        if any(f.lower().endswith(AUDIO_EXTENSIONS) for f in files):
            return True
    return False


def detect_layout(root: str) -> str:
    """The layout of a source directory: "esc50", "fsd50k" or "folders".

    Raises:
      FileNotFoundError: the directory does not exist, or is in none of the layouts.
    """
    if not os.path.isdir(root):
        raise MissingData(
            f"Recordings directory {root!r} does not exist; point data.clips_dir / "
            f"data.background_dir at {ACCEPTED_LAYOUTS}."
        )
    if os.path.isfile(os.path.join(root, ESC50_CSV)):
        return "esc50"
    if os.path.isdir(os.path.join(root, FSD50K_TRUTH)):
        return "fsd50k"
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith(".") and _has_audio(entry.path):
            return "folders"
    raise MissingData(
        f"{root!r} holds no recordings in a layout clip_pairs reads. Accepted: {ACCEPTED_LAYOUTS}."
    )


def _read_csv(path: str, required: Sequence[str], expected: str) -> Iterable[tuple[int, dict]]:
    """(line, row) of a metadata CSV, after checking its header has the required columns."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise BadData(
                f"{path}: the header {header} lacks the column(s) {missing}; expected "
                f"{expected!r} (the dataset's original file)."
            )
        col = {h: i for i, h in enumerate(header)}
        for fields in reader:
            if not any(field.strip() for field in fields):
                continue
            row = {c: (fields[col[c]].strip() if col[c] < len(fields) else "") for c in required}
            yield reader.line_num, row


def _index_esc50(root: str) -> list[Recording]:
    path = os.path.join(root, ESC50_CSV)
    out = []
    for line, row in _read_csv(path, ESC50_COLUMNS, ESC50_HEADER):
        where = f"{path} line {line}"
        try:
            fold = int(row["fold"])
        except ValueError:
            fold = -1
        if fold not in ESC50_FOLD_SPLITS or not row["filename"] or not row["category"]:
            raise BadData(
                f"{where}: {row} needs a file name, a category and a fold from 1 to 5; fix or "
                "remove the row."
            )
        out.append(
            Recording(
                path=os.path.join(ESC50_AUDIO, row["filename"]),
                labels=(row["category"],),
                split=ESC50_FOLD_SPLITS[fold],
                where=where,
            )
        )
    return out


def _index_fsd50k(root: str) -> list[Recording]:
    out = []
    for csv_name, columns, audio, header in (
        (FSD50K_DEV_CSV, FSD50K_DEV_COLUMNS, FSD50K_DEV_AUDIO, "fname,labels,mids,split"),
        (FSD50K_EVAL_CSV, FSD50K_EVAL_COLUMNS, FSD50K_EVAL_AUDIO, "fname,labels,mids"),
    ):
        path = os.path.join(root, csv_name)
        if not os.path.isfile(path):
            raise MissingData(
                f"{root!r} looks like FSD50K ({FSD50K_TRUTH}/ exists) but {path} is missing; "
                f"FSD50K needs {FSD50K_DEV_CSV} and {FSD50K_EVAL_CSV}."
            )
        for line, row in _read_csv(path, columns, header):
            where = f"{path} line {line}"
            labels = tuple(lb.strip() for lb in row["labels"].split(",") if lb.strip())
            split = FSD50K_SPLITS.get(row["split"]) if "split" in row else "eval"
            if not row["fname"] or not labels or split is None:
                raise BadData(
                    f"{where}: {row} needs an fname, labels and (dev.csv) a split of train or "
                    "val; fix or remove the row."
                )
            out.append(Recording(os.path.join(audio, f"{row['fname']}.wav"), labels, split, where))
    return out


def _hash(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8")).hexdigest()


def folder_held_out(num_files: int) -> int:
    """Files of a class of the folder layout in validation, and as many in eval."""
    if num_files < 3:
        return 0
    return max(2 if num_files >= 6 else 1, round(FOLDER_HELD_OUT_FRACTION * num_files))


def _index_folders(root: str) -> list[Recording]:
    out = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        files = []
        for folder, dirs, names in os.walk(entry.path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in names:
                if name.lower().endswith(AUDIO_EXTENSIONS) and not name.startswith("."):
                    files.append(os.path.relpath(os.path.join(folder, name), root))
        ranked = sorted(files, key=lambda p: (_hash(p.replace(os.sep, "/")), p))
        k = folder_held_out(len(ranked))
        split = {p: "eval" for p in ranked[:k]}
        split.update({p: "validation" for p in ranked[k : 2 * k]})
        for p in sorted(files):
            out.append(Recording(p, (entry.name,), split.get(p, "train"), os.path.join(root, p)))
    return out


def index_sources(root: str) -> SourceIndex:
    """Every recording of `root` with its labels and split (reads metadata, decodes nothing).

    Raises:
      FileNotFoundError: no such directory, no known layout, or a missing FSD50K CSV.
      ValueError: a metadata CSV lacks columns (names the file and them) or has a bad row.
    """
    root = os.path.abspath(os.path.expanduser(root))
    layout = detect_layout(root)
    if layout == "esc50":
        return SourceIndex(root, layout, tuple(_index_esc50(root)), (ESC50_CSV,), ESC50_SECONDS)
    if layout == "fsd50k":
        recordings = tuple(_index_fsd50k(root))
        return SourceIndex(root, layout, recordings, (FSD50K_DEV_CSV, FSD50K_EVAL_CSV), None)
    return SourceIndex(root, layout, tuple(_index_folders(root)), (), None)


def select_classes(
    index: SourceIndex,
    labels: Sequence[str],
    *,
    role: str,
    min_per_split: int,
    exclude: Iterable[str] = (),
    setting: str = "the class list",
    dir_setting: str = "the directory",
) -> dict[str, dict[str, list[Recording]]]:
    """The recordings of each requested class, per split.

    A recording that carries two requested classes is left out (it would be ambiguous), as is
    one carrying a label of `exclude` (a background that holds a foreground class); both are
    counted in the log. Every selected file must exist.

    Args:
      index: the directory's recordings.
      labels: the requested class labels (matched by `normalize_label`).
      role: "foreground" or "background", for messages.
      min_per_split: recordings each class needs in every split.
      exclude: labels whose recordings are not used.
      setting, dir_setting: the config fields of the classes and of the directory, for messages.

    Returns:
      requested label -> split -> recordings (sorted by path).

    Raises:
      ValueError: a class has no (or too few) recordings; the message names the class, the
        directory and the classes it holds.
      FileNotFoundError: a selected file is missing (names the metadata row and the file).
    """
    wanted = {}
    for label in labels:
        key = normalize_label(label)
        if not key:
            raise BadData(f"{setting}: {label!r} is not a class label.")
        if key in wanted:
            raise BadData(f"{setting} lists {label!r} and {wanted[key]!r}, which are one class.")
        wanted[key] = label
    excluded = {normalize_label(x) for x in exclude}
    chosen: dict[str, dict[str, list[Recording]]] = {
        label: {s: [] for s in SPLITS} for label in labels
    }
    ambiguous = dropped = 0
    for r in index.recordings:
        keys = {normalize_label(lb) for lb in r.labels}
        hits = [wanted[k] for k in keys if k in wanted]
        if not hits:
            continue
        if len(hits) > 1:
            ambiguous += 1
            continue
        if keys & excluded:
            dropped += 1
            continue
        chosen[hits[0]][r.split].append(r)
    if ambiguous or dropped:
        logging.warning(
            "clip_pairs: %s: left out %d %s recording(s) labelled with two requested classes "
            "and %d labelled with a foreground class.",
            index.name,
            ambiguous,
            role,
            dropped,
        )
    advice = (
        f"Set {setting} to classes the directory holds (comma-separated; case and separators do "
        f"not matter) or point {dir_setting} at recordings that have it"
    )
    for label, splits in chosen.items():
        if not any(splits.values()):
            raise BadData(
                f"The {role} class {label!r} has no recordings in {index.name}. The classes "
                f"there are: {', '.join(index.labels) or '(none)'}. {advice}."
            )
    _drop_missing_files(index, chosen, role, min_per_split)
    for label, splits in chosen.items():
        short = {s: len(rs) for s, rs in splits.items() if len(rs) < min_per_split}
        if short:
            raise BadData(
                f"The {role} class {label!r} in {index.name} has too few recordings in split(s) "
                f"{short}: every split needs {min_per_split} or more"
                + (" ('change' swaps one for another)" if min_per_split > 1 else "")
                + f". {_split_rule(index.layout)} Add recordings or choose other classes."
            )
        for rs in splits.values():
            rs.sort(key=lambda r: r.path)
    return chosen


def _drop_missing_files(
    index: SourceIndex,
    chosen: dict[str, dict[str, list[Recording]]],
    role: str,
    min_per_split: int,
) -> None:
    """Removes the listed recordings whose files are absent (a partial download of ESC-50 or
    FSD50K), saying how many are missing per split; fails when a class is left with fewer than
    `min_per_split` recordings in a split.

    Raises:
      MissingData: a class lost too many recordings (names the classes and splits, the counts
        and the first missing file).
    """
    missing: dict[str, list[Recording]] = {s: [] for s in SPLITS}
    listed = {s: 0 for s in SPLITS}
    short: list[str] = []
    for label, splits in chosen.items():
        for split, rs in splits.items():
            there = [os.path.isfile(os.path.join(index.root, r.path)) for r in rs]
            present = [r for r, ok in zip(rs, there, strict=True) if ok]
            listed[split] += len(rs)
            missing[split] += [r for r, ok in zip(rs, there, strict=True) if not ok]
            if len(present) < len(rs) and len(present) < min_per_split:
                short.append(f"{label!r} in {split} ({len(present)} of {len(rs)} present)")
            splits[split] = present
    lost = sum(len(rs) for rs in missing.values())
    if not lost:
        return
    counts = ", ".join(
        f"{split} {len(missing[split])} of {listed[split]}" for split in SPLITS if listed[split]
    )
    first = next(r for split in SPLITS for r in missing[split])
    summary = (
        f"{index.name}: {lost} of the {sum(listed.values())} {role} recordings its metadata "
        f"lists for the requested classes are missing ({counts} per split; the first: "
        f"{first.where} names {os.path.join(index.root, first.path)}): a partial download?"
    )
    if short:
        raise MissingData(
            f"{summary} Too few are left of {'; '.join(short)}: every split needs "
            f"{min_per_split} or more recordings of each class. Download the missing files, or "
            "choose classes whose recordings are all there."
        )
    logging.warning(
        "clip_pairs: %s Every class still has recordings in every split, so the build uses the "
        "%d that are there; download the rest to build from the whole dataset.",
        summary,
        sum(len(rs) for splits in chosen.values() for rs in splits.values()),
    )


def _split_rule(layout: str) -> str:
    if layout == "esc50":
        return "ESC-50's folds 1-3 are train, 4 validation, 5 eval."
    if layout == "fsd50k":
        return "FSD50K's dev split train/val gives train/validation, eval.csv gives eval."
    return (
        "The folder layout puts 20% of a class's files in validation and 20% in eval (at least "
        "2 each from 6 files on)."
    )


def active_region(wav: np.ndarray, sample_rate: int) -> tuple[int, int]:
    """[start, end) in samples: from the first to the last 20 ms frame within ACTIVE_RANGE_DB
    of the loudest one (the whole clip if it is shorter than a frame)."""
    hop = max(1, int(round(ACTIVE_FRAME_SECONDS * sample_rate)))
    m = wav.shape[0] // hop
    if m == 0:
        return 0, wav.shape[0]
    energy = np.mean(np.square(wav[: m * hop].reshape(m, hop), dtype=np.float64), axis=1)
    active = np.flatnonzero(energy >= energy.max() * 10.0 ** (-ACTIVE_RANGE_DB / 10.0))
    end = wav.shape[0] if active[-1] == m - 1 else (active[-1] + 1) * hop
    return int(active[0] * hop), int(end)


def load_recording(
    path: str, sample_rate: int, role: str, *, where: str = ""
) -> tuple[np.ndarray, int, int]:
    """Decodes one recording at `sample_rate` (mono float32) and keeps what pairs can use.

    Args:
      path: the audio file.
      sample_rate: Hz (resampled once here, never per pair).
      role: "event" (kept: its active part, `active_region`) or "background" (kept whole).
      where: the metadata row naming the file, for messages.

    Returns:
      (samples, offset, length): the kept samples, where they start in the decoded file, and
      the decoded file's length, all in samples.

    Raises:
      AudioError: the file is missing, unreadable or silent (names the file and row).
    """
    try:
        wav = load_audio(path, sample_rate)
    except AudioError as e:
        raise AudioError(f"{where}: {e}" if where else str(e)) from e
    if float(np.abs(wav).max()) < 10.0 ** (SILENCE_DBFS / 20.0):
        raise AudioError(
            f"Audio file {path!r} is silent (peak below {SILENCE_DBFS:g} dBFS)"
            + (f", listed at {where}" if where else "")
            + "; it cannot be mixed into pairs. Replace it or remove it from the data."
        )
    if role == "background":
        return wav, 0, wav.shape[0]
    start, end = active_region(wav, sample_rate)
    return np.ascontiguousarray(wav[start:end]), start, wav.shape[0]
