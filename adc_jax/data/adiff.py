"""ADIFF's audio difference explanations (Deshmukh et al., ICLR 2025) as a tfds builder.

ADIFF published CSVs (MIT licence) that explain, at three levels of detail, how two clips differ:
pairs of AudioCaps clips (ACD, `subset="acd"`) and of Clotho v2.1 clips (CLD, `subset="cld"`).
The audio is not part of that release and nothing of it ships with adc_jax: download the CSVs,
AudioCaps and Clotho yourself and point `build_adiff` (config keys `data.csv_dir`,
`data.audio_dir`, `data.adiff_subset`) at them. Expected inputs, all directly in CSV_DIR:

  {acd,cld}_<split>_adiff_<tier>_answer.csv   (`csv_name(subset, split, tier)`)

with <split> train/val/test for ACD and development/validation/evaluation for CLD (stored as
the splits train/validation/eval, `SPLIT_FILES`) and <tier> fewwords (1), sentence (2), detail
(3) (`TIER_NAMES`). Each has the header `taskname,filepath1,filepath2,caption1,caption2,input,
answer` (only filepath1, filepath2 and answer are used; a UTF-8 BOM and quoted fields holding
commas or line breaks are fine). A row with an empty answer is skipped and counted; a CSV with no
usable row, a header without the needed columns, a row with the wrong number of fields or an empty
filepath fails the build naming the CSV and line.

One example per distinct (filepath1, filepath2) pair of a split, holding the answers of every tier
whose CSV is present: `captions` are the answers (stripped, whitespace collapsed; case and
punctuation kept, the tokenizer deals with them) and `caption_tiers` the tier of each, aligned, in
tier order and then CSV order. So one build serves any choice of tiers, made when the data are
read (`data.adiff_tiers`). A pair listed more than once in a tier's CSV keeps every answer as a
reference of that tier; a pair absent from a tier's CSV has no caption of that tier (both are
counted in the build log). Keys are "<filepath1>|<filepath2>", the scene is the subset, recipe
and edit_* are empty. Records are stored in the order pairs first occur (tier 1's CSV first).
Every split needs at least one tier's CSV; train is required, a validation or eval split whose
CSVs are all absent is left out with a warning (check `builder.info.splits`).

Audio: `filepath1`/`filepath2` (e.g. "ClothoV21/evaluation/<name>.wav",
"AudioCapsLarger/test/Y<id>.wav") are relative to AUDIO_DIR. A file is looked for, in this order
(`audio_candidates`), at
  AUDIO_DIR/<filepath>                          the layout of the CSVs;
  AUDIO_DIR/<filepath without its first folder>  AUDIO_DIR is ClothoV21/ or AudioCapsLarger/;
  AUDIO_DIR/clotho_audio_files/<split>/<name>    (CLD) the DCASE baseline's Clotho layout, or
  AUDIO_DIR/<split>/<name>                       (ACD) AudioCaps split folders train/val/test;
  AUDIO_DIR/<name>                              every file in one folder;
  (ACD) the three AudioCaps places above with the name's leading "Y" dropped, for copies
  named by the bare YouTube id;
where <split> is the CSV's split name and <name> the file name. Every file of every split is
found before any is decoded; a missing one fails the build naming the CSV row, the filepath and
the paths tried. Each distinct clip is decoded once per split (pairs share clips: Clotho's
evaluation split has about 1,045 clips in 5,225 pairs), mixed to mono, resampled to
`sample_rate` (16 kHz), cropped to `clip_seconds` (Clotho clips are 15-30 s; at most that much
audio is stored per clip) and stored as int16, each distinct clip once: split S's clips are the
split `S_clips` and its pairs name them by position (`adc_jax.data.clip_store`; read a split with
`clip_store.pair_source(builder, S)`, which joins them). Before decoding, `audio_io.check_clip_lengths` probes every
file: truncated files and clips shorter than half of NOMINAL_SECONDS are logged, and with
`min_clip_fraction` > 0 a clip shorter than that fraction of it fails the build. An unreadable
file raises `AudioError` naming the CSV row.

The builder config's name is "<subset>_fp<hash>": a fingerprint of the subset's CSVs (contents,
and which are present), the subset, clip_seconds, the sample rate, `GENERATION_VERSION` and every
audio file's path relative to AUDIO_DIR, size and modification time (one `stat` each at every
start, no read: `adc_jax.data.source_files`). Moving the audio directory does not rebuild;
replacing a file does, and the log names the changed files and the old build to delete.

Public API:
  SUBSETS, TIERS, TIER_NAMES, SPLIT_FILES, NOMINAL_SECONDS, GENERATION_VERSION
  csv_name(subset, split, tier)                 file name of one ADIFF CSV.
  csv_path(csv_dir, subset, split, tier)        its path inside csv_dir.
  clean_answer(text)                            strip and collapse whitespace.
  Row, Pair, SplitPairs                         a CSV row; a merged pair; a split's pairs + counts.
  read_csv(path, tier)                          -> (rows, n_skipped) of one CSV.
  read_split(csv_dir, subset, split)            -> SplitPairs (merged pairs) or None if absent.
  audio_candidates(audio_dir, subset, split, filepath) / resolve_audio(...)
  answer_length_stats(pairs)                    answers, median and max words per tier.
  answer_statistics(csv_dir, subset)            the same for every split present.
  format_answer_statistics(stats)               a Markdown table of answer_statistics.
  fingerprint(csv_dir, subset, clip_seconds, sample_rate)
  Adiff, AdiffConfig                            the tfds builder and its config.
  build_adiff(data_dir, *, csv_dir, audio_dir, subset, clip_seconds, ...) -> prepared builder.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import math
import os
import statistics
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from adc_jax.data import builder as builder_lib
from adc_jax.data import clip_store, paths, source_files
from adc_jax.data import features as features_lib
from adc_jax.data import writer as writer_lib
from adc_jax.data.audio_io import AudioError, check_clip_lengths, load_audio
from adc_jax.data.errors import BadData, MissingData

SUBSETS = ("acd", "cld")
TIERS = (1, 2, 3)
TIER_NAMES = {1: "fewwords", 2: "sentence", 3: "detail"}
# Stored split -> the split's name in the CSV file names.
SPLIT_FILES = {
    "acd": {"train": "train", "validation": "val", "eval": "test"},
    "cld": {"train": "development", "validation": "validation", "eval": "evaluation"},
}
SPLITS = ("train", "validation", "eval")
# Nominal clip length in seconds of each subset's audio (AudioCaps 10 s, Clotho 15-30 s).
NOMINAL_SECONDS = {"acd": 10.0, "cld": 15.0}
COLUMNS = ("taskname", "filepath1", "filepath2", "caption1", "caption2", "input", "answer")
REQUIRED_COLUMNS = ("filepath1", "filepath2", "answer")
# Bump when the generated examples change for the same inputs (forces a rebuild).
GENERATION_VERSION = 1


def _check_subset(subset: str) -> None:
    if subset not in SUBSETS:
        raise ValueError(f"ADIFF subset {subset!r} is not one of {SUBSETS} (data.adiff_subset).")


def csv_name(subset: str, split: str, tier: int) -> str:
    """'cld', 'eval', 1 -> 'cld_evaluation_adiff_fewwords_answer.csv'."""
    _check_subset(subset)
    if split not in SPLIT_FILES[subset]:
        raise ValueError(f"ADIFF split {split!r} is not one of {SPLITS}.")
    if tier not in TIER_NAMES:
        raise ValueError(f"ADIFF tier {tier!r} is not one of {TIERS}.")
    return f"{subset}_{SPLIT_FILES[subset][split]}_adiff_{TIER_NAMES[tier]}_answer.csv"


def csv_path(csv_dir: str, subset: str, split: str, tier: int) -> str:
    """The path of one ADIFF CSV inside `csv_dir`."""
    return os.path.join(csv_dir, csv_name(subset, split, tier))


def clean_answer(text: str | None) -> str:
    """Strips and collapses whitespace (line breaks included); keeps case and punctuation."""
    return " ".join((text or "").split())


@dataclasses.dataclass(frozen=True)
class Row:
    """One usable CSV row: a pair of audio files and one explanation of a tier."""

    filepath1: str
    filepath2: str
    answer: str
    tier: int
    csv_path: str
    line: int

    @property
    def key(self) -> str:
        return f"{self.filepath1}|{self.filepath2}"

    def where(self) -> str:
        """'row at FILE:LINE' for error messages."""
        return f"row at {self.csv_path}:{self.line}"


@dataclasses.dataclass(frozen=True)
class Pair:
    """One example: a distinct (filepath1, filepath2) of a split and its answers of every tier."""

    key: str
    filepath1: str
    filepath2: str
    captions: tuple[str, ...]
    tiers: tuple[int, ...]
    # The first CSV row naming the pair ("row at FILE:LINE"), for error messages.
    where: str


@dataclasses.dataclass(frozen=True)
class SplitPairs:
    """The merged pairs of one split and what merging them did (for the build log)."""

    subset: str
    split: str
    pairs: tuple[Pair, ...]
    # Per tier whose CSV is present: its path, usable rows, rows skipped for an empty answer,
    # pairs listed more than once (their answers merged), pairs of the split absent from it.
    csv_paths: dict[int, str]
    rows: dict[int, int]
    skipped: dict[int, int]
    repeated: dict[int, int]
    missing: dict[int, int]

    def summary(self) -> str:
        """One line for the build log."""
        per_tier = "; ".join(
            f"tier {t} ({TIER_NAMES[t]}): {self.rows[t]} rows, {self.repeated[t]} pair(s) listed "
            f"more than once (answers merged), {self.skipped[t]} empty answer(s) skipped, "
            f"{self.missing[t]} pair(s) without this tier"
            for t in self.csv_paths
        )
        absent = [t for t in TIERS if t not in self.csv_paths]
        return (
            f"ADIFF {self.subset} {self.split}: {len(self.pairs)} pairs; {per_tier}"
            + (f"; no CSV for tier(s) {absent}" if absent else "")
            + "."
        )


def read_csv(path: str, tier: int) -> tuple[list[Row], int]:
    """Reads one ADIFF CSV (a UTF-8 BOM and quoted commas/line breaks are fine).

    Returns:
      (rows, n_skipped): the rows with a non-empty answer in file order (`line` is the line the
      row starts on; the header is line 1) and the number of rows skipped for an empty answer.

    Raises:
      ValueError: not UTF-8, a header without filepath1/filepath2/answer, a row whose field count
        differs from the header's, an empty filepath, or malformed CSV quoting (names FILE:LINE).
    """
    rows, skipped = [], 0
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise BadData(
                    f"{path}:1: the header {header} lacks the column(s) {missing}; expected "
                    f"{','.join(COLUMNS)} (ADIFF's format). Check that this is an ADIFF answer "
                    "CSV."
                )
            col = {h: i for i, h in enumerate(header)}
            start = reader.line_num + 1
            for fields in reader:
                line, start = start, reader.line_num + 1
                if not any(field.strip() for field in fields):
                    continue  # blank line
                if len(fields) != len(header):
                    raise BadData(
                        f"{path}:{line}: the row has {len(fields)} fields but the header has "
                        f"{len(header)}; a field holding a comma, quote or line break must be "
                        "quoted. Fix or remove the row."
                    )
                fp1, fp2 = fields[col["filepath1"]].strip(), fields[col["filepath2"]].strip()
                if not fp1 or not fp2:
                    raise BadData(
                        f"{path}:{line}: empty filepath1 or filepath2; fix or remove the row."
                    )
                answer = clean_answer(fields[col["answer"]])
                if not answer:
                    skipped += 1
                    continue
                rows.append(Row(fp1, fp2, answer, tier, path, line))
        except csv.Error as e:
            raise BadData(
                f"{path}:{reader.line_num}: malformed CSV ({e}); check the quoting near this line."
            ) from e
        except UnicodeDecodeError as e:
            raise BadData(
                f"{path} is not UTF-8 text ({e}); use the CSV as published by ADIFF."
            ) from e
    return rows, skipped


def read_split(csv_dir: str, subset: str, split: str) -> SplitPairs | None:
    """Reads every tier's CSV of one split and merges the rows into pairs; None if none exists.

    Raises:
      ValueError: a CSV is malformed (`read_csv`) or has no usable row.
    """
    paths = {
        t: csv_path(csv_dir, subset, split, t)
        for t in TIERS
        if os.path.isfile(csv_path(csv_dir, subset, split, t))
    }
    if not paths:
        return None
    groups: dict[str, list[Row]] = {}
    rows_per_tier, skipped, repeated = {}, {}, {}
    for tier, path in paths.items():
        rows, n_skipped = read_csv(path, tier)
        if not rows:
            raise BadData(
                f"ADIFF CSV {path} has no usable row ({n_skipped} row(s) with an empty answer); "
                "replace it with the published file or delete it to build without this tier."
            )
        counts = collections.Counter(r.key for r in rows)
        rows_per_tier[tier], skipped[tier] = len(rows), n_skipped
        repeated[tier] = sum(1 for n in counts.values() if n > 1)
        for r in rows:  # tiers in order, rows in file order: captions come out sorted by tier
            groups.setdefault(r.key, []).append(r)
    pairs = tuple(
        Pair(
            key=key,
            filepath1=rows[0].filepath1,
            filepath2=rows[0].filepath2,
            captions=tuple(r.answer for r in rows),
            tiers=tuple(r.tier for r in rows),
            where=rows[0].where(),
        )
        for key, rows in groups.items()
    )
    missing = {t: sum(1 for p in pairs if t not in p.tiers) for t in paths}
    return SplitPairs(subset, split, pairs, paths, rows_per_tier, skipped, repeated, missing)


def audio_candidates(audio_dir: str, subset: str, split: str, filepath: str) -> list[str]:
    """The paths where a CSV's `filepath` is looked for, in order (see the module docstring)."""
    parts = [p for p in filepath.replace("\\", "/").split("/") if p not in ("", ".")]
    name, folder = parts[-1], SPLIT_FILES[subset][split]
    candidates = [os.path.join(audio_dir, *parts)]
    if len(parts) > 1:
        candidates.append(os.path.join(audio_dir, *parts[1:]))
    if subset == "cld":
        candidates.append(os.path.join(audio_dir, "clotho_audio_files", folder, name))
    else:
        candidates.append(os.path.join(audio_dir, folder, name))
    candidates.append(os.path.join(audio_dir, name))
    if subset == "acd" and name.startswith("Y") and len(name) > 1:
        # AudioCaps downloads often name a clip by its YouTube id alone, without the "Y" that
        # AudioSet's file names (and ADIFF's CSVs) put in front.
        bare = name[1:]
        candidates += [
            os.path.join(audio_dir, *parts[:-1], bare),
            os.path.join(audio_dir, folder, bare),
            os.path.join(audio_dir, bare),
        ]
    return list(dict.fromkeys(candidates))  # without repeats, in order


def resolve_audio(audio_dir: str, subset: str, split: str, filepath: str) -> str | None:
    """The first existing candidate path of `filepath`, or None."""
    for path in audio_candidates(audio_dir, subset, split, filepath):
        if os.path.isfile(path):
            return path
    return None


def answer_length_stats(pairs: Sequence[Pair]) -> dict[int, dict[str, float]]:
    """Per tier present in `pairs`: {"answers": count, "median_words": ..., "max_words": ...}."""
    words: dict[int, list[int]] = collections.defaultdict(list)
    for p in pairs:
        for caption, tier in zip(p.captions, p.tiers, strict=True):
            words[tier].append(len(caption.split()))
    return {
        t: {
            "answers": len(words[t]),
            "median_words": float(statistics.median(words[t])),
            "max_words": max(words[t]),
        }
        for t in sorted(words)
    }


def answer_statistics(csv_dir: str, subset: str) -> dict[str, dict[int, dict[str, float]]]:
    """`answer_length_stats` of every split whose CSVs are present, read from `csv_dir`."""
    _check_subset(subset)
    out = {}
    for split in SPLITS:
        split_pairs = read_split(csv_dir, subset, split)
        if split_pairs is not None:
            out[split] = answer_length_stats(split_pairs.pairs)
    return out


def format_answer_statistics(stats: dict[str, dict[int, dict[str, float]]]) -> str:
    """A Markdown table (split, tier, answers, median and max words) of `answer_statistics`."""
    lines = [
        "| split | tier | answers | median words | max words |",
        "|---|---|---|---|---|",
    ]
    for split, per_tier in stats.items():
        for tier, s in per_tier.items():
            lines.append(
                f"| {split} | {tier} ({TIER_NAMES[tier]}) | {s['answers']:,} | "
                f"{s['median_words']:g} | {s['max_words']} |"
            )
    return "\n".join(lines)


def fingerprint(
    csv_dir: str, subset: str, clip_seconds: float, sample_rate: int, audio: str = ""
) -> str:
    """A short hash of everything that determines the generated examples: the CSVs, the
    settings and `audio`, a digest of the audio files' CSV paths, sizes and modification times
    (`audio_digest`; "" leaves them out)."""
    h = hashlib.sha256()
    h.update(
        f"v{GENERATION_VERSION};subset={subset};clip_seconds={float(clip_seconds)!r};"
        f"sr={int(sample_rate)};".encode()
    )
    if audio:
        h.update(f"audio={audio};".encode())
    for split in SPLITS:
        for tier in TIERS:
            path = csv_path(csv_dir, subset, split, tier)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    content = f.read()
                h.update(f"{split}/{tier}:{len(content)}:".encode())
                h.update(content)
            else:
                h.update(f"{split}/{tier}:absent;".encode())
    return h.hexdigest()[:16]


@dataclasses.dataclass(eq=False)
class AdiffConfig(builder_lib.BuildConfig):
    """Where the inputs are and how clips are stored; the name is their fingerprint.

    num_workers (`BuildConfig`): decoding processes while building.
    """

    audio_dir: str = ""
    csv_dir: str = ""
    subset: str = "acd"
    # Stored clips are cropped to this many seconds.
    clip_seconds: float = 10.0
    sample_rate: int = features_lib.SAMPLE_RATE
    # A clip shorter than this fraction of NOMINAL_SECONDS fails the build (0 = never); does
    # not change the data, so it is not part of the fingerprint.
    min_clip_fraction: float = 0.0
    # The splits' pairs and resolved audio (`plan_splits`), found before the config is named;
    # None: found when the build starts. Not in the repr: it lists every file.
    plans: dict | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class _SplitPlan:
    """One split ready to write: its pairs and every distinct clip's resolved path."""

    pairs: tuple[Pair, ...]
    clip_paths: tuple[str, ...]  # index -> resolved file
    clip_where: tuple[str, ...]  # index -> "'filepath' (first named by the row at FILE:LINE)"
    clip_index: dict[str, int]  # CSV filepath -> index


def _log_split(split_pairs: SplitPairs) -> None:
    """Logs a split's summary, its skipped rows and its answer lengths per tier."""
    subset, split = split_pairs.subset, split_pairs.split
    logging.info("%s", split_pairs.summary())
    if any(split_pairs.skipped.values()):
        logging.warning(
            "ADIFF %s %s: skipped %d row(s) with an empty answer.",
            subset,
            split,
            sum(split_pairs.skipped.values()),
        )
    for tier, s in answer_length_stats(split_pairs.pairs).items():
        logging.info(
            "ADIFF %s %s tier %d (%s): %d answers, median %g words, max %d.",
            subset,
            split,
            tier,
            TIER_NAMES[tier],
            s["answers"],
            s["median_words"],
            s["max_words"],
        )


def plan_splits(
    csv_dir: str, audio_dir: str, subset: str, *, log: bool = True
) -> dict[str, _SplitPlan]:
    """Reads and merges every split's CSVs and finds every audio file (decodes nothing).

    With `log`, logs each split's summary and answer lengths (a build does; the start-up
    check of the sources in `build_adiff` does not).

    Raises:
      MissingData: no training CSV, or audio files not found (the first named, with the places
        tried, and how many).
      BadData: a malformed CSV (`read_csv`).
    """
    plans, missing = {}, []
    for split in SPLITS:
        split_pairs = read_split(csv_dir, subset, split)
        if split_pairs is None:
            if split == "train":
                names = ", ".join(csv_name(subset, "train", t) for t in TIERS)
                raise MissingData(
                    f"ADIFF: no training CSV in data.csv_dir={csv_dir!r}; it needs at "
                    f"least one of {names}."
                )
            if log:
                logging.warning(
                    "ADIFF %s: no CSV of the %s split (%s) in %s; the split is left out.",
                    subset,
                    split,
                    ", ".join(csv_name(subset, split, t) for t in TIERS),
                    csv_dir,
                )
            continue
        if log:
            _log_split(split_pairs)
        index: dict[str, int] = {}
        paths, where, not_found = [], [], set()
        for p in split_pairs.pairs:
            for fp in (p.filepath1, p.filepath2):
                if fp in index or fp in not_found:
                    continue
                path = resolve_audio(audio_dir, subset, split, fp)
                if path is None:
                    not_found.add(fp)
                    missing.append((split, fp, p.where))
                    continue
                index[fp] = len(paths)
                paths.append(path)
                where.append(f"{fp!r} (first named by the {p.where})")
        plans[split] = _SplitPlan(split_pairs.pairs, tuple(paths), tuple(where), index)
    if missing:
        split, fp, row = missing[0]
        tried = ", ".join(audio_candidates(audio_dir, subset, split, fp))
        raise MissingData(
            f"ADIFF: {len(missing)} audio file(s) not found under data.audio_dir="
            f"{audio_dir!r}. First: the {row} names {fp!r}; tried {tried}. Set "
            "data.audio_dir to the folder the filepath1/filepath2 columns are relative to "
            "(the one holding ClothoV21/ or AudioCapsLarger/) or put the files in one of "
            "these places."
        )
    return plans


class Adiff(builder_lib.Builder):
    """ADIFF pairs (ACD or CLD) with the shared adc_jax schema (`features.features_dict`)."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "First release: every tier's answers per pair, clips cropped.",
        "2.0.0": "Each distinct clip stored once (split S_clips); pairs name their clips.",
    }

    def _description(self) -> str:
        cfg = self.builder_config
        return (
            f"ADIFF {cfg.subset.upper()} difference explanations (Deshmukh et al., ICLR "
            f"2025) built from csv_dir={cfg.csv_dir!r}, clip_seconds={cfg.clip_seconds}, "
            f"sample_rate={cfg.sample_rate}."
        )

    @property
    def _max_samples(self) -> int:
        cfg = self.builder_config
        return max(1, int(round(cfg.clip_seconds * cfg.sample_rate)))

    def _plans(self) -> dict[str, _SplitPlan]:
        """The splits' pairs and audio files (`plan_splits`, logged), their lengths checked
        (`audio_io.check_clip_lengths`), all before any decoding."""
        cfg = self.builder_config
        plans = plan_splits(cfg.csv_dir, cfg.audio_dir, cfg.subset)
        check_clip_lengths(
            [
                (f"{split} split, {where}", path)
                for split, plan in plans.items()
                for where, path in zip(plan.clip_where, plan.clip_paths, strict=True)
            ],
            dataset=f"ADIFF {cfg.subset}",
            nominal_seconds=NOMINAL_SECONDS[cfg.subset],
            min_fraction=cfg.min_clip_fraction,
        )
        return plans

    def _split_generators(self, dl_manager) -> dict[str, Iterator]:
        """tfds' standard example streams (each pair decoded on its own); `_generate_splits`
        writes the same examples, decoding each clip once."""
        del dl_manager  # Nothing is downloaded: the user provides the data.
        return {split: self._generate_examples(plan) for split, plan in self._plans().items()}

    def _generate_examples(self, plan: _SplitPlan):
        for p in plan.pairs:
            yield p.key, _example(p, self.builder_config.subset, plan)

    def _split_jobs(self) -> builder_lib.SplitJobs:
        """Per split S, in order: its clip store `S_clips` (each distinct clip decoded once, in
        worker processes for 64 or more clips, in the order of `plan.clip_paths`), then its
        pairs, which name their clips by position (`clip_store`)."""
        cfg = self.builder_config
        jobs = {}
        for split, plan in self._plans().items():  # every file found before any decoding
            clips = [
                (path, where, cfg.sample_rate, self._max_samples)
                for path, where in zip(plan.clip_paths, plan.clip_where, strict=True)
            ]
            jobs[clip_store.clips_split(split)] = (_clip_record, clips)
            pairs = [_example(p, cfg.subset, plan) for p in plan.pairs]
            jobs[split] = (_serialize_pair, pairs)
            logging.info(
                "ADIFF %s %s: %d pairs over %d distinct clips, each stored once.",
                cfg.subset,
                split,
                len(plan.pairs),
                len(plan.clip_paths),
            )
        return jobs

    def _features(self) -> tfds.features.FeaturesDict:
        """The pair schema with clips named by position (`clip_store.referenced_features_dict`)."""
        return clip_store.referenced_features_dict()


def _clip_record(job: tuple[str, str, int, int]) -> bytes:
    """(path, where, sample_rate, max_samples) -> the stored clip (`clip_store.clip_record`):
    the file decoded, mono, at sample_rate, cropped to max_samples, int16. Top level: worker
    processes run it."""
    path, where, sample_rate, max_samples = job
    try:
        wav = load_audio(path, sample_rate)
    except AudioError as e:
        raise AudioError(f"ADIFF audio {where}: {e}") from e
    return clip_store.clip_record(features_lib.to_int16(wav[:max_samples]))


def _serialize_pair(example: dict) -> bytes:
    """A pair record of the referencing schema. Top level: worker processes run it."""
    return writer_lib.serialize_example(example, clip_store.referenced_features_dict)


def _example(pair: Pair, subset: str, plan: _SplitPlan) -> dict:
    """One stored pair (`clip_store.referenced_features_dict`): its clips by position."""
    return {
        "key": pair.key,
        "clip1": plan.clip_index[pair.filepath1],
        "clip2": plan.clip_index[pair.filepath2],
        "captions": list(pair.captions),
        "scene": subset,
        "caption_tiers": np.asarray(pair.tiers, np.int32),
        "recipe": "",
        "edit_ops": [],
        "edit_classes": [],
        "edit_magnitudes": np.zeros((0,), np.float32),
    }


def audio_sources(plans: dict[str, _SplitPlan]) -> tuple[source_files.SourceFile, ...]:
    """Every distinct audio file of the plans, named by its CSV filepath (so any layout of the
    same files under data.audio_dir gives the same names), with its size and mtime."""
    paths = {fp: plan.clip_paths[i] for plan in plans.values() for fp, i in plan.clip_index.items()}
    return tuple(
        dataclasses.replace(source_files.stat_files("/", [paths[fp]])[0], name=fp)
        for fp in sorted(paths)
    )


def build_adiff(
    data_dir: str,
    *,
    csv_dir: str,
    audio_dir: str,
    subset: str,
    clip_seconds: float,
    sample_rate: int = features_lib.SAMPLE_RATE,
    min_clip_fraction: float = 0.0,
    num_workers: int | None = None,
) -> tfds.core.DatasetBuilder:
    """Builds one ADIFF subset into `data_dir` unless this exact version is there; returns it.

    Read a split with `clip_store.pair_source(builder, "train" | "validation" | "eval")`;
    select tiers with each record's `caption_tiers`.

    Args:
      data_dir: tfds data directory (the dataset goes to DATA_DIR/adiff/<subset>_fp<hash>).
      csv_dir: directory holding the {acd,cld}_<split>_adiff_<tier>_answer.csv files
        (config key `data.csv_dir`).
      audio_dir: directory the CSVs' filepath1/filepath2 are relative to (`data.audio_dir`;
        the fallbacks of `audio_candidates` are also tried).
      subset: "acd" (AudioCaps pairs) or "cld" (Clotho v2.1 pairs) (`data.adiff_subset`).
      clip_seconds: stored clips are cropped to this length in seconds (> 0).
      sample_rate: sample rate of the stored waveforms in Hz.
      min_clip_fraction: in [0, 1]; when > 0, a clip shorter than this fraction of the subset's
        nominal length (NOMINAL_SECONDS: 10 s ACD, 15 s CLD) fails the build before any
        decoding (`audio_io.check_clip_lengths`; truncated and short files are logged either
        way).
      num_workers: audio decoding processes (default: all CPUs; splits under 64 distinct clips
        are decoded in-process); does not change the data.

    Raises:
      FileNotFoundError: a directory, every training CSV or an audio file is missing (the
        message names it and the config key to change).
      AudioError: an audio file cannot be decoded, or is shorter than min_clip_fraction allows
        (names the CSV row and the file).
      ValueError: a malformed CSV (names FILE:LINE) or an invalid argument.
    """
    _check_subset(subset)
    if not (isinstance(clip_seconds, int | float) and math.isfinite(clip_seconds)):
        raise ValueError(f"data.clip_seconds={clip_seconds!r} must be a positive number.")
    if clip_seconds <= 0:
        raise ValueError(f"data.clip_seconds={clip_seconds!r} must be positive.")
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"data.sample_rate={sample_rate!r} must be a positive integer.")
    if not 0.0 <= min_clip_fraction <= 1.0:
        raise ValueError(f"data.min_clip_fraction={min_clip_fraction!r} must be in [0, 1].")
    data_dir = os.path.expanduser(data_dir)
    paths.require_local(csv_dir, "data.csv_dir", paths.SOURCE_WHY)
    paths.require_local(audio_dir, "data.audio_dir", paths.SOURCE_WHY)
    csv_dir = os.path.abspath(os.path.expanduser(csv_dir)) if csv_dir else ""
    audio_dir = os.path.abspath(os.path.expanduser(audio_dir)) if audio_dir else ""
    if not csv_dir or not os.path.isdir(csv_dir):
        raise MissingData(
            f"ADIFF CSV directory {csv_dir!r} does not exist; set data.csv_dir to the folder "
            f"holding the {subset}_<split>_adiff_<tier>_answer.csv files."
        )
    if not audio_dir or not os.path.isdir(audio_dir):
        raise MissingData(
            f"ADIFF audio directory {audio_dir!r} does not exist; set data.audio_dir to the "
            "folder the CSVs' filepath1/filepath2 columns are relative to."
        )
    train_csvs = [csv_path(csv_dir, subset, "train", t) for t in TIERS]
    if not any(os.path.isfile(path) for path in train_csvs):
        raise MissingData(
            f"ADIFF: no training CSV in data.csv_dir={csv_dir!r}; it needs at least one of "
            f"{', '.join(os.path.basename(p) for p in train_csvs)}."
        )
    plans = plan_splits(csv_dir, audio_dir, subset, log=False)
    audio = audio_sources(plans)
    csvs = [
        csv_name(subset, split, t)
        for split in SPLITS
        for t in TIERS
        if os.path.isfile(csv_path(csv_dir, subset, split, t))
    ]
    sources = source_files.Sources(
        {"dataset": "adiff", "subset": subset, "csv_dir": csv_dir, "audio_dir": audio_dir,
         "clip_seconds": float(clip_seconds), "sample_rate": sample_rate},
        source_files.stat_files(csv_dir, csvs, prefix="csv_dir:")
        + tuple(dataclasses.replace(f, name="audio_dir:" + f.name) for f in audio),
    )  # fmt: skip
    name = fingerprint(csv_dir, subset, clip_seconds, sample_rate, audio=source_files.digest(audio))
    config = AdiffConfig(
        name=f"{subset}_fp{name}",
        description=f"ADIFF {subset} built from user-provided CSVs and audio.",
        audio_dir=audio_dir,
        csv_dir=csv_dir,
        subset=subset,
        clip_seconds=float(clip_seconds),
        sample_rate=sample_rate,
        min_clip_fraction=float(min_clip_fraction),
        num_workers=num_workers,
        sources=sources,
    )
    return Adiff.prepare(config, data_dir, "pairs")
