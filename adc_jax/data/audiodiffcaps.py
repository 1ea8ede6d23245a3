"""The AudioDiffCaps dataset (Takeuchi et al., 2023) as a tfds builder writing `array_record`.

AudioDiffCaps is distributed by NTT under an evaluation-only licence, so nothing of it ships with
adc_jax: point `build_audio_diff_caps` (or the config keys `data.csv_dir` / `data.audio_dir`) at
your own copy. Expected inputs:

  CSV_DIR/adc_rain/dev/adc_rain_dev.csv          CSV_DIR/adc_rain/eval/adc_rain_eval.csv
  CSV_DIR/adc_traffic/dev/adc_traffic_dev.csv    CSV_DIR/adc_traffic/eval/adc_traffic_eval.csv

each with the header `key,s1_fn,s2_fn,caption_1,...,caption_5` (any number of caption_N columns
is accepted). Captions are stripped, whitespace-collapsed and lower-cased; empty caption fields
(some rows have fewer than five captions) are dropped. A row with no caption at all is skipped
and the count is logged.

Audio: the WAV file named by `s1_fn`/`s2_fn` (any rate and channel count; the originals are 10 s,
44.1 kHz, mono) is looked up, in this order, at
  AUDIO_DIR/<fn>, AUDIO_DIR/adc_<scene>/<fn>, AUDIO_DIR/adc_<scene>/<subset>/<fn>,
  AUDIO_DIR/<scene>/<fn>
where scene is rain/traffic and subset is dev/eval. A file that is found nowhere, or that cannot
be decoded, fails the build with an error naming the key, the CSV row and the file: silently
dropping pairs would change the benchmark. Before anything is decoded, every file is probed
(`audio_io.check_clip_lengths`): truncated files (shorter than their WAV header promises: a
partial download) and clips shorter than 5 s (half the nominal 10 s) are counted and logged in
one warning, and clips shorter than `min_clip_fraction` * 10 s fail the build naming the row and
the file (`min_clip_fraction` = 0, the default, fails none). Clips are mixed to mono, resampled
to 16 kHz and stored as int16 (`features.to_int16`), each distinct WAV once per split: split S's
WAVs are the split `S_clips` and its pairs name them by position (`adc_jax.data.clip_store`; read
a split with `clip_store.pair_source(builder, S)`). Splits are written by the shared builder base
(`adc_jax.data.builder`, with `adc_jax.data.writer`: no TensorFlow, also for the 3 GB dev split),
records in CSV order (rain before traffic).

Splits: `eval` = the eval CSVs; the dev CSVs are divided into `train` and a held-out
`validation` split of round(validation_fraction * N) pairs: the pairs whose keys have the
smallest SHA-256 hashes (independent of any random state; at least one pair when the fraction is
positive and the dev set has two or more pairs). tfds cannot store an empty split, so an empty
`validation` (fraction 0) or `eval` split is left out of the build: check `builder.info.splits`.

Keys: the CSV `key`. A key that occurs in both scenes' CSVs is prefixed with the scene
("rain_<key>", "traffic_<key>") so keys stay unique; a key repeated within one split after that
is an error.

The builder config's name is a fingerprint of the four CSVs' contents, the validation fraction,
the sample rate, `GENERATION_VERSION` and every WAV's name, size and modification time (one
`stat` each at every start, no read: `adc_jax.data.source_files`), so changed inputs, a replaced
WAV included, build a new copy next to the old one instead of silently reusing it, and the log
names the changed files and the old build to delete. Moving the WAVs does not rebuild.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from adc_jax.data import builder as builder_lib
from adc_jax.data import clip_store, paths, source_files
from adc_jax.data import features as features_lib
from adc_jax.data import writer as writer_lib
from adc_jax.data.audio_io import AudioError, check_clip_lengths, load_audio
from adc_jax.data.errors import BadData, MissingData

SCENES = ("rain", "traffic")
SUBSETS = ("dev", "eval")
REQUIRED_COLUMNS = ("key", "s1_fn", "s2_fn")
# Bump when the generated examples change for the same inputs (forces a rebuild).
GENERATION_VERSION = 1
# Length of an AudioDiffCaps clip in seconds (what check_clip_lengths compares clips with).
NOMINAL_SECONDS = 10.0
_CAPTION_COLUMN = re.compile(r"^caption_(\d+)$")


@dataclasses.dataclass(frozen=True)
class Row:
    """One usable CSV row: a pair of audio files and its reference captions."""

    key: str
    scene: str
    subset: str
    s1_fn: str
    s2_fn: str
    captions: tuple[str, ...]
    csv_path: str
    line: int

    def where(self) -> str:
        """'key K (row at FILE:LINE)' for error messages."""
        return f"key {self.key!r} (row at {self.csv_path}:{self.line})"


def csv_path(csv_dir: str, scene: str, subset: str) -> str:
    """The official location of one AudioDiffCaps CSV inside `csv_dir`."""
    return os.path.join(csv_dir, f"adc_{scene}", subset, f"adc_{scene}_{subset}.csv")


def clean_caption(text: str | None) -> str:
    """Strips, collapses whitespace and lower-cases a caption ('' for a missing field)."""
    return " ".join((text or "").split()).lower()


def read_csv(path: str, scene: str, subset: str) -> tuple[list[Row], int]:
    """Reads one AudioDiffCaps CSV.

    Returns:
      (rows, n_skipped): rows with at least one caption, in file order, and the number of rows
      skipped because all their caption fields were empty.
    """
    rows, skipped = [], 0
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        caption_cols = sorted(
            ((int(m.group(1)), i) for i, h in enumerate(header) if (m := _CAPTION_COLUMN.match(h)))
        )
        if missing or not caption_cols:
            raise BadData(
                f"{path}: header {header} lacks the column(s) "
                f"{missing or ['caption_1']}; expected "
                "key,s1_fn,s2_fn,caption_1,...,caption_5 (the official AudioDiffCaps "
                "format)."
            )
        col = {h: i for i, h in enumerate(header)}
        for fields in reader:
            line = reader.line_num
            if not any(field.strip() for field in fields):
                continue  # blank line
            get = lambda i, fields=fields: fields[i] if i < len(fields) else ""  # noqa: E731
            key, s1, s2 = (get(col[c]).strip() for c in REQUIRED_COLUMNS)
            if not key or not s1 or not s2:
                raise BadData(
                    f"{path}:{line}: empty key, s1_fn or s2_fn in row {fields}; fix "
                    "or remove the row."
                )
            captions = tuple(c for _, i in caption_cols if (c := clean_caption(get(i))))
            if not captions:
                skipped += 1
                continue
            rows.append(
                Row(
                    key=key,
                    scene=scene,
                    subset=subset,
                    s1_fn=s1,
                    s2_fn=s2,
                    captions=captions,
                    csv_path=path,
                    line=line,
                )
            )
    return rows, skipped


def audio_candidates(audio_dir: str, scene: str, subset: str, fn: str) -> list[str]:
    """The paths where the file named `fn` in a CSV row is looked for, in order."""
    return [
        os.path.join(audio_dir, fn),
        os.path.join(audio_dir, f"adc_{scene}", fn),
        os.path.join(audio_dir, f"adc_{scene}", subset, fn),
        os.path.join(audio_dir, scene, fn),
    ]


def resolve_audio(audio_dir: str, scene: str, subset: str, fn: str) -> str | None:
    """The first existing candidate path of `fn`, or None."""
    for path in audio_candidates(audio_dir, scene, subset, fn):
        if os.path.isfile(path):
            return path
    return None


def read_rows(csv_dir: str, *, log: bool = True) -> dict[tuple[str, str], list[Row]]:
    """Reads the four CSVs; returns rows per (scene, subset), keys made unique across scenes.

    With `log`, logs the rows skipped and the keys prefixed (a build does; the start-up check of
    the sources in `build_audio_diff_caps` does not)."""
    by_csv: dict[tuple[str, str], list[Row]] = {}
    total_skipped = 0
    for scene in SCENES:
        for subset in SUBSETS:
            rows, skipped = read_csv(csv_path(csv_dir, scene, subset), scene, subset)
            if skipped and log:
                logging.warning(
                    "AudioDiffCaps: skipped %d row(s) without any caption in %s.",
                    skipped,
                    csv_path(csv_dir, scene, subset),
                )
            total_skipped += skipped
            by_csv[(scene, subset)] = rows
    if total_skipped and log:
        logging.warning(
            "AudioDiffCaps: %d row(s) without captions skipped in total.", total_skipped
        )
    keys_per_scene = {
        s: {r.key for (sc, _), rows in by_csv.items() if sc == s for r in rows} for s in SCENES
    }
    shared = set.intersection(*keys_per_scene.values())
    if shared:
        if log:
            logging.info(
                "AudioDiffCaps: %d key(s) occur in both scenes; prefixing them with the scene.",
                len(shared),
            )
        by_csv = {
            k: [
                dataclasses.replace(r, key=f"{r.scene}_{r.key}") if r.key in shared else r
                for r in rows
            ]
            for k, rows in by_csv.items()
        }
    return by_csv


def validation_keys(keys: list[str], fraction: float) -> set[str]:
    """The held-out validation keys: the round(fraction*N) keys with the smallest SHA-256.

    Deterministic and independent of any random state and of the order of `keys`. At least one
    key when fraction > 0 and N >= 2; never all keys.
    """
    n = len(keys)
    if fraction <= 0 or n < 2:
        return set()
    n_val = min(n - 1, max(1, round(fraction * n)))
    ranked = sorted(keys, key=lambda k: (hashlib.sha256(k.encode("utf-8")).hexdigest(), k))
    return set(ranked[:n_val])


def split_rows(
    by_csv: dict[tuple[str, str], list[Row]], validation_fraction: float
) -> dict[str, list[Row]]:
    """Maps the per-CSV rows to the train/validation/eval splits; checks keys are unique."""
    dev = [r for s in SCENES for r in by_csv[(s, "dev")]]
    evals = [r for s in SCENES for r in by_csv[(s, "eval")]]
    held_out = validation_keys([r.key for r in dev], validation_fraction)
    splits = {
        "train": [r for r in dev if r.key not in held_out],
        "validation": [r for r in dev if r.key in held_out],
        "eval": evals,
    }
    for split, rows in splits.items():
        seen: dict[str, Row] = {}
        for r in rows:
            if r.key in seen:
                raise BadData(
                    f"AudioDiffCaps: key {r.key!r} occurs twice in split {split!r}: "
                    f"{seen[r.key].csv_path}:{seen[r.key].line} and "
                    f"{r.csv_path}:{r.line}. Keys must be unique; fix the CSVs."
                )
            seen[r.key] = r
    return splits


def fingerprint(csv_dir: str, validation_fraction: float, sample_rate: int, audio: str = "") -> str:
    """A short hash of everything that determines the generated examples: the CSVs, the
    settings and `audio`, a digest of the WAVs' names, sizes and modification times
    (`audio_sources`; "" leaves them out)."""
    h = hashlib.sha256()
    h.update(
        f"v{GENERATION_VERSION};fraction={float(validation_fraction)!r};"
        f"sr={int(sample_rate)};".encode()
    )
    if audio:
        h.update(f"audio={audio};".encode())
    for scene in SCENES:
        for subset in SUBSETS:
            h.update(f"{scene}/{subset}:".encode())
            with open(csv_path(csv_dir, scene, subset), "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


@dataclasses.dataclass(eq=False)
class AudioDiffCapsConfig(builder_lib.BuildConfig):
    """Where the inputs are and how the splits are made; the name is their fingerprint.

    num_workers (`BuildConfig`): decoding processes while building.
    """

    audio_dir: str = ""
    csv_dir: str = ""
    validation_fraction: float = 0.05
    sample_rate: int = features_lib.SAMPLE_RATE
    # Clips shorter than this fraction of NOMINAL_SECONDS fail the build (0: none do). Not in
    # the name, which fingerprints the data: it only decides whether a build fails, never what
    # it writes.
    min_clip_fraction: float = 0.0


class AudioDiffCaps(builder_lib.Builder):
    """AudioDiffCaps pairs naming their clips (`clip_store.referenced_features_dict`)."""

    VERSION = tfds.core.Version("3.0.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "2.0.0": "audio1/audio2 stored as raw int16 bytes (Encoding.BYTES) in uncompressed "
        "array_record shards written by adc_jax.data.writer (no TensorFlow for splits over "
        "1 GB); records in CSV order.",
        "3.0.0": "Each distinct WAV stored once (split S_clips); pairs name their clips.",
    }
    HOMEPAGE = "https://github.com/nttcslab/audio-diff-caps"

    def _description(self) -> str:
        cfg = self.builder_config
        return (
            "AudioDiffCaps (Takeuchi et al., DCASE 2023) built from "
            f"csv_dir={cfg.csv_dir!r}, validation_fraction={cfg.validation_fraction}, "
            f"sample_rate={cfg.sample_rate}."
        )

    def _split_rows(self) -> dict[str, tuple[list[Row], dict[tuple[str, str], str]]]:
        """The non-empty splits' rows and every audio path (all files found and their lengths
        checked before decoding)."""
        cfg = self.builder_config
        splits = split_rows(read_rows(cfg.csv_dir), cfg.validation_fraction)
        resolved = _resolve_all(cfg.audio_dir, [r for rows in splits.values() for r in rows])
        if not splits["train"]:
            raise BadData(
                f"AudioDiffCaps: no training pairs (the dev CSVs under data.csv_dir="
                f"{cfg.csv_dir!r} hold no row with a caption)."
            )
        check_clip_lengths(
            [
                (r.where(), resolved[(r.key, fn)])
                for rows in splits.values()
                for r in rows
                for fn in (r.s1_fn, r.s2_fn)
            ],
            dataset="AudioDiffCaps",
            nominal_seconds=NOMINAL_SECONDS,
            min_fraction=cfg.min_clip_fraction,
        )
        out = {}
        for split, rows in splits.items():
            if rows:  # tfds cannot write an empty split; it is left out instead.
                logging.info("AudioDiffCaps: %s split has %d pairs.", split, len(rows))
                out[split] = (rows, resolved)
            else:
                logging.warning("AudioDiffCaps: the %s split is empty and is not written.", split)
        return out

    def _split_generators(self, dl_manager) -> dict[str, Iterator]:
        """tfds' standard example streams; `_generate_splits` writes the same examples."""
        del dl_manager  # Nothing is downloaded: the user provides the data.
        return {
            split: self._generate_examples(rows, resolved)
            for split, (rows, resolved) in self._split_rows().items()
        }

    def _generate_examples(self, rows: list[Row], resolved: dict[tuple[str, str], str]):
        clips = _distinct_clips(rows, resolved)
        for r in rows:
            yield r.key, _example(r, resolved, clips)

    def _split_jobs(self) -> builder_lib.SplitJobs:
        """Per split S, in order: its clip store `S_clips`, every distinct WAV once (decoded by
        the writer's workers, in order of first use), then its pairs in CSV order, which name
        their clips by position (`clip_store`)."""
        sr = self.builder_config.sample_rate
        jobs = {}
        for split, (rows, resolved) in self._split_rows().items():
            clips = _distinct_clips(rows, resolved)
            jobs[clip_store.clips_split(split)] = (
                _clip_record,
                [(path, where, sr) for path, where in clips.jobs],
            )
            jobs[split] = (_serialized_pair, [_example(r, resolved, clips) for r in rows])
        return jobs

    def _features(self) -> tfds.features.FeaturesDict:
        """The pair schema with clips named by position (`clip_store.referenced_features_dict`)."""
        return clip_store.referenced_features_dict()


@dataclasses.dataclass(frozen=True)
class _Clips:
    """A split's distinct WAVs in order of first use (its clip store's order)."""

    jobs: tuple[tuple[str, str], ...]  # (resolved path, the first row naming it)
    index: dict[str, int]  # resolved path -> position in the clip store


def _distinct_clips(rows: list[Row], resolved: dict[tuple[str, str], str]) -> _Clips:
    """Every distinct WAV of `rows` once, in order of first use."""
    jobs, index = [], {}
    for r in rows:
        for fn in (r.s1_fn, r.s2_fn):
            path = resolved[(r.key, fn)]
            if path not in index:
                index[path] = len(jobs)
                jobs.append((path, f"{r.where()} ({fn!r})"))
    return _Clips(tuple(jobs), index)


def _clip_record(job: tuple[str, str, int]) -> bytes:
    """(path, where, sample rate) -> the stored clip: the WAV decoded to mono int16 at the rate
    (`clip_store.clip_record`). Top level: worker processes run it."""
    path, where, sr = job
    try:
        wav = load_audio(path, sr)
    except AudioError as e:
        raise AudioError(f"AudioDiffCaps {where}: {e}") from e
    return clip_store.clip_record(features_lib.to_int16(wav))


def _example(r: Row, resolved: dict[tuple[str, str], str], clips: _Clips) -> dict:
    """One stored pair: its clips' positions in the split's clip store, captions and scene."""
    return {
        "key": r.key,
        "clip1": clips.index[resolved[(r.key, r.s1_fn)]],
        "clip2": clips.index[resolved[(r.key, r.s2_fn)]],
        "captions": list(r.captions),
        "scene": r.scene,
        "caption_tiers": np.zeros((0,), np.int32),
        "recipe": "",
        "edit_ops": [],
        "edit_classes": [],
        "edit_magnitudes": np.zeros((0,), np.float32),
    }


def _serialized_pair(example: dict) -> bytes:
    """The stored record of one pair (top level: worker processes run it)."""
    return writer_lib.serialize_example(example, clip_store.referenced_features_dict)


def _resolve_all(audio_dir: str, rows: list[Row]) -> dict[tuple[str, str], str]:
    """Finds every audio file before any decoding, so a missing file fails the build at once."""
    resolved, missing = {}, []
    for r in rows:
        for fn in (r.s1_fn, r.s2_fn):
            path = resolve_audio(audio_dir, r.scene, r.subset, fn)
            if path is None:
                missing.append((r, fn))
            else:
                resolved[(r.key, fn)] = path
    if missing:
        r, fn = missing[0]
        tried = ", ".join(audio_candidates(audio_dir, r.scene, r.subset, fn))
        raise MissingData(
            f"AudioDiffCaps: {len(missing)} audio file(s) not found under data.audio_dir="
            f"{audio_dir!r}. First: {r.where()} names {fn!r}; tried {tried}. Put the WAV files "
            "there (or in adc_<scene>/ subfolders) or fix data.audio_dir."
        )
    return resolved


def audio_sources(
    rows: list[Row], resolved: dict[tuple[str, str], str]
) -> tuple[source_files.SourceFile, ...]:
    """Every distinct WAV of the rows, named "<scene>/<fn>" as the CSVs name it (so any of the
    accepted layouts under data.audio_dir gives the same names), with its size and mtime."""
    paths = {f"{r.scene}/{fn}": resolved[(r.key, fn)] for r in rows for fn in (r.s1_fn, r.s2_fn)}
    return tuple(
        dataclasses.replace(source_files.stat_files("/", [paths[name]])[0], name=name)
        for name in sorted(paths)
    )


def build_audio_diff_caps(
    data_dir: str,
    *,
    audio_dir: str,
    csv_dir: str,
    validation_fraction: float = 0.05,
    sample_rate: int = features_lib.SAMPLE_RATE,
    num_workers: int | None = None,
    min_clip_fraction: float = 0.0,
) -> tfds.core.DatasetBuilder:
    """Builds AudioDiffCaps into `data_dir` unless this exact version is there; returns the builder.

    Read a split with `clip_store.pair_source(builder, "train" | "validation" | "eval")`.

    Args:
      data_dir: tfds data directory (the dataset goes to DATA_DIR/audio_diff_caps/<fingerprint>).
      audio_dir: directory of the WAV files named in the CSVs (config key `data.audio_dir`).
      csv_dir: directory holding adc_{rain,traffic}/{dev,eval}/*.csv (config key `data.csv_dir`).
      validation_fraction: fraction of the dev pairs held out as the validation split, in [0, 1).
      sample_rate: sample rate of the stored waveforms in Hz.
      num_workers: audio decoding processes while building (default: all CPUs; splits under
        64 pairs are decoded in-process); does not change the data.
      min_clip_fraction: in [0, 1]; a clip shorter than this fraction of the nominal 10 s fails
        the build (config key `data.min_clip_fraction`; 0 = none fails). Truncated and short
        clips are logged either way; does not change the data (not in the fingerprint), and an
        existing build is not checked again.

    Raises:
      FileNotFoundError: a directory, a CSV or an audio file is missing (the message names it and
        the config key to change).
      AudioError: an audio file cannot be decoded, or is shorter than min_clip_fraction * 10 s
        (names the key, CSV row and file).
      ValueError: a malformed CSV or an invalid argument.
    """
    data_dir = os.path.expanduser(data_dir)
    paths.require_local(csv_dir, "data.csv_dir", paths.SOURCE_WHY)
    paths.require_local(audio_dir, "data.audio_dir", paths.SOURCE_WHY)
    audio_dir = os.path.abspath(os.path.expanduser(audio_dir)) if audio_dir else ""
    csv_dir = os.path.abspath(os.path.expanduser(csv_dir)) if csv_dir else ""
    if not (0.0 <= validation_fraction < 1.0):
        raise ValueError(f"data.validation_fraction={validation_fraction!r} must be in [0, 1).")
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"data.sample_rate={sample_rate!r} must be a positive integer.")
    if not (0.0 <= min_clip_fraction <= 1.0):
        raise ValueError(f"data.min_clip_fraction={min_clip_fraction!r} must be in [0, 1].")
    if not csv_dir or not os.path.isdir(csv_dir):
        raise MissingData(
            f"AudioDiffCaps CSV directory {csv_dir!r} does not exist; set "
            "data.csv_dir to the folder holding adc_rain/ and adc_traffic/."
        )
    for scene in SCENES:
        for subset in SUBSETS:
            path = csv_path(csv_dir, scene, subset)
            if not os.path.isfile(path):
                raise MissingData(
                    f"AudioDiffCaps CSV {path!r} not found; data.csv_dir="
                    f"{csv_dir!r} must hold adc_{{rain,traffic}}/{{dev,eval}}/"
                    "adc_{rain,traffic}_{dev,eval}.csv."
                )
    if not audio_dir or not os.path.isdir(audio_dir):
        raise MissingData(
            f"AudioDiffCaps audio directory {audio_dir!r} does not exist; set "
            "data.audio_dir to the folder holding the WAV files named in the "
            "CSVs' s1_fn/s2_fn columns."
        )
    rows = [r for rs in split_rows(read_rows(csv_dir, log=False), validation_fraction).values()
            for r in rs]  # fmt: skip
    audio = audio_sources(rows, _resolve_all(audio_dir, rows))
    sources = source_files.Sources(
        {"dataset": "audio_diff_caps", "csv_dir": csv_dir, "audio_dir": audio_dir,
         "validation_fraction": float(validation_fraction), "sample_rate": sample_rate},
        source_files.stat_files(
            csv_dir, [csv_path(csv_dir, sc, su) for sc in SCENES for su in SUBSETS], "csv_dir:"
        )
        + tuple(dataclasses.replace(f, name="audio_dir:" + f.name) for f in audio),
    )  # fmt: skip
    name = fingerprint(csv_dir, validation_fraction, sample_rate, audio=source_files.digest(audio))
    config = AudioDiffCapsConfig(
        name=f"fp{name}",
        description="AudioDiffCaps built from user-provided CSVs and audio.",
        audio_dir=audio_dir,
        csv_dir=csv_dir,
        validation_fraction=float(validation_fraction),
        sample_rate=sample_rate,
        min_clip_fraction=float(min_clip_fraction),
        num_workers=num_workers,
        sources=sources,
    )
    return AudioDiffCaps.prepare(config, data_dir, "pairs")
