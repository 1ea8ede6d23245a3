"""Clips for self-supervised pretraining (BYOL-A): two tfds datasets and their grain pipeline.

Pretraining needs audio only, no captions. Three sources, chosen by `config.data.name`:

  synthetic_clips  built-in: clips made by the synthetic scene generator
                   (`adc_jax.data.synthetic.scenes`, `adc_jax.data.synthetic.sounds`), generated
                   on first use. Clips 2j and 2j + 1 of a split are the two clips of pair j,
                   drawn from default_rng([seed, split_id, j]) (the two clips of a pair share
                   their background and most events, and cost about one clip's synthesis each),
                   so the data does not depend on the build processes.
                   A clip's label is the event classes it holds, sorted and comma-joined ("" for
                   background only). Sizes: data.num_train / data.num_validation clips.
  synthetic_events built-in, the pretraining default: single-event scenes from the same
                   synthesiser (`scenes.single_event_clip`): a crop of one event instance (3-5 s
                   long, its own seed and character) of class i % 10 over a rain or traffic
                   background, at a signal-to-background ratio from U(EVENT_SNR_DB) = U(-12, +6)
                   dB; clip i of split s from default_rng([seed, EVENTS_TAG, split_id, i]), so no
                   clip shares a generator with the linear probe's labelled set
                   (`tools/linear_probe.py`, whose events sit at -12..-3 dB). A clip's label is
                   its event class. Same sizes and seed fields as synthetic_clips. Measured
                   (docs/pretraining.md): `:quick` encoders pretrained on 6,000 of these
                   clips reach 81.2% on the linear probe (79.6% on 2,000), against 74.6% after
                   2,000 synthetic_clips (whose events sit 0-15 dB above the background) and
                   69.0% at random init.
  audio_folder     the user's audio: every file under data.audio_dir (any folder tree; the
                   formats libsndfile reads: WAV, FLAC, OGG, ...; any sample rate, channel count
                   and length) is decoded and resampled once (`audio_io.load_audio`) and cut into
                   clips of data.clip_seconds from its start. The last piece of a file is kept
                   when it is at least half a clip (MIN_LAST_PIECE), and a file shorter than half
                   a clip gives one short clip, so no file is dropped; shorter clips are
                   zero-padded by the pipeline with their length kept. A clip's label is the name
                   of its file's folder ("" at the top). The validation split holds the files
                   whose SHA-256 of their relative path falls in the lowest VALIDATION_FRACTION
                   (5%) of hash values (at least one file), so no file is in both splits and the
                   split does not depend on the listing order. Before decoding, every file is
                   probed (`audio_io.check_clip_lengths`): truncated files and files under half a
                   clip are counted in one warning; an unreadable file fails the build naming it.
                   data.exclude_held_out=True first leaves out the recordings that
                   `adc_jax.data.clip_sources` holds out for evaluation (ESC-50 fold 5, FSD50K
                   eval, 20% of each class folder by path hash): pretrain on a collection, then
                   probe or caption its held-out part. In a class-folder layout both rules pick
                   the lowest path hashes, so validation then usually holds the one file the
                   fallback gives it (pretraining reads only the train split).

Record schema (all): key (text: "train_000042", or "<relative path>@<clip index>"), audio ([N]
int16 at data.sample_rate, stored as raw bytes, Encoding.BYTES), label (text).

Both builders derive from the builder base of every adc_jax dataset (`adc_jax.data.builder`) and
are written with the shared writer (`adc_jax.data.writer`: worker processes, index order,
uncompressed array_record shards, never read back when interrupted); they co-exist in one
data_dir (`adc_jax.data.registry.data_dir`): synthetic_clips/<sizes>/ (synthetic_events:
synthetic_clips/<sizes>_events/), audio_folder/<clip>_<rate>_fp<fingerprint>/, where the
fingerprint covers the file list (relative paths, sizes, modification times), the clip length,
the sample rate, the validation fraction, data.exclude_held_out and GENERATION_VERSION, so
changed audio builds anew. Processes that build the same variant take turns under a file lock.

Training batches (`clip_batches`): this process's shard of the split -> seeded shuffle (a new
order every epoch, from config.seed) -> repeat -> batches of train.batch_size / process_count
clips, cropped or zero-padded to N = clip_seconds * sample_rate samples straight into the batch
-> prefetch threads -> optional worker processes. The iterator's `get_state()` / `set_state()`
resume the exact order. Random crops and augmentations are the step's job, on the device.

Public API:
  load_clip_source(config) -> builder            the prepared tfds builder of config.data.
  CLIP_DATASETS                                  the clip datasets by data.name (a registry).
  clip_batches(source, config, *, process_index, process_count) -> grain.IterDataset
                                                 infinite {"wav": [b, N] int16, "wav_len": [b]}.
  SyntheticClipsSpec, build_synthetic_clips(data_dir, spec)
  AudioFolderSpec, build_audio_folder(data_dir, spec)
  list_audio_files(root) -> (AudioFile, ...)     the files an audio_folder build reads.
  held_out_recordings(root) -> frozenset[str]    the files data.exclude_held_out leaves out.
  clip_bounds(num_samples, clip_samples)         where a file's clips start and end.
  folder_split(relative_path, fraction)          "train" or "validation" of a file.
  synthetic_clip(spec, split, index)             one synthetic record, made without a build.
  event_clip(spec, split, index)                 one synthetic_events record (the same).
  clip_features(), serialize_clip(example), parse_clip(record)   the schema and its records.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from tensorflow_datasets.proto import tf_example_pb2

from adc_jax.data import builder as builder_lib
from adc_jax.data import clip_sources, paths, pipeline, registry, source_files
from adc_jax.data import features as features_lib
from adc_jax.data import writer as writer_lib
from adc_jax.data.audio_io import check_clip_lengths, load_audio
from adc_jax.data.clip_sources import AUDIO_EXTENSIONS
from adc_jax.data.errors import BadData, MissingData
from adc_jax.data.synthetic.grammar import EVENT_CLASSES
from adc_jax.data.synthetic.scenes import generate_pair, single_event_clip
from adc_jax.data.synthetic.sounds import synthesize_event

SPLITS = ("train", "validation")
# What a synthetic variant holds: the captioner's pairs ("scenes") or single events ("events").
SYNTHETIC_KINDS = ("scenes", "events")
# synthetic_events: signal-to-background ratio (dB) of the events, length (s) of an instance.
EVENT_SNR_DB = (-12.0, 6.0)
EVENT_SECONDS = (3.0, 5.0)
# synthetic_events: tag in each clip's seed, so its generators are none of the other sets'.
EVENTS_TAG = 5003
# Bump when the records made from the same audio_folder inputs change (forces a rebuild).
GENERATION_VERSION = 1
# audio_folder: share of the files (by the hash of their path) in the validation split.
VALIDATION_FRACTION = 0.05
# audio_folder: the last piece of a file becomes a clip when it is at least this share of one.
MIN_LAST_PIECE = 0.5


# ------------------------------------------------------------------------------- the schema


def clip_features() -> tfds.features.FeaturesDict:
    """The tfds FeaturesDict of a clip record: key, audio ([N] int16 raw bytes), label."""
    return tfds.features.FeaturesDict(
        {
            "key": tfds.features.Text(),
            "audio": tfds.features.Tensor(
                shape=(None,), dtype=np.int16, encoding=tfds.features.Encoding.BYTES
            ),
            "label": tfds.features.Text(),
        }
    )


def serialize_clip(example: Mapping[str, Any]) -> bytes:
    """Encodes and serialises one clip record (deterministic bytes, `writer.serialize_example`)."""
    return writer_lib.serialize_example(example, clip_features)


def parse_clip(record: bytes) -> dict[str, Any]:
    """key (bytes), audio (read-only [N] int16 view) and label (bytes) of a serialised record."""
    feature = tf_example_pb2.Example.FromString(record).features.feature
    return {
        "key": feature["key"].bytes_list.value[0],
        "audio": np.frombuffer(feature["audio"].bytes_list.value[0], np.int16),
        "label": feature["label"].bytes_list.value[0],
    }


# -------------------------------------------------------------------------- synthetic_clips


@dataclasses.dataclass(frozen=True)
class SyntheticClipsSpec(builder_lib.VariantSpec):
    """What defines a synthetic_clips variant: the data is a function of these fields only.

    Attributes:
      num_train, num_validation: clips per split (each > 0).
      clip_seconds: length of each clip (> 0).
      seed: data seed (>= 0); scenes: clips 2j, 2j + 1 of split s come from
        default_rng([seed, s, j]); events: clip i from default_rng([seed, EVENTS_TAG, s, i]).
      sample_rate: Hz.
      kind: "scenes" (synthetic_clips: the captioner's pairs) or "events" (synthetic_events).
    """

    num_train: int
    num_validation: int
    clip_seconds: float
    seed: int = 0
    sample_rate: int = features_lib.SAMPLE_RATE
    kind: str = "scenes"
    SPLITS = SPLITS

    def __post_init__(self) -> None:
        if self.kind not in SYNTHETIC_KINDS:
            raise ValueError(f"kind={self.kind!r} must be one of {', '.join(SYNTHETIC_KINDS)}.")
        self.check_variant("clips", config_keys=True)

    @classmethod
    def from_config(cls, data_config: Any) -> SyntheticClipsSpec:
        """The spec of a pretraining `config.data` section (its synth_seed is the data seed;
        data.name "synthetic_events" gives kind "events")."""
        return cls(
            **cls.variant_fields(data_config),
            kind="events" if data_config.name == "synthetic_events" else "scenes",
        )

    @property
    def config_name(self) -> str:
        """E.g. "n20000-500_4s_seed0" ("_sr8000" appended if not 16 kHz, "_events" for
        single-event clips)."""
        name = self.variant_name
        return f"{name}_events" if self.kind == "events" else name


def event_clip(spec: SyntheticClipsSpec, split: str, index: int) -> dict[str, Any]:
    """Record `index` of `split` of a synthetic_events variant: one event instance of class
    index % 10, a crop of it over a background at U(EVENT_SNR_DB) dB (`single_event_clip`)."""
    rng = np.random.default_rng([spec.seed, EVENTS_TAG, builder_lib.split_id(split, SPLITS), index])
    cls = EVENT_CLASSES[index % len(EVENT_CLASSES)]
    event_seed, character = int(rng.integers(2**62)), float(rng.random())
    duration = max(float(rng.uniform(*EVENT_SECONDS)), spec.clip_seconds)
    event = synthesize_event(cls, event_seed, character, duration, spec.sample_rate)
    clip = single_event_clip(rng, event, spec.clip_seconds, EVENT_SNR_DB, spec.sample_rate)
    key = f"{split}_{index:06d}"
    return {"key": key, "audio": features_lib.to_int16(clip["wav"]), "label": cls}


def _pair_clips(spec: SyntheticClipsSpec, split: str, pair: int) -> list[dict[str, Any]]:
    """The clip records 2 pair and 2 pair + 1 of `split`: both clips of synthetic pair `pair`
    (scenes), or two single-event clips (events)."""
    if spec.kind == "events":
        return [event_clip(spec, split, 2 * pair + j) for j in range(2)]
    rng = np.random.default_rng([spec.seed, builder_lib.split_id(split, SPLITS), pair])
    made = generate_pair(rng, spec.clip_seconds, spec.sample_rate)
    out = []
    for j, (audio, events) in enumerate(
        ((made["audio1"], made["events1"]), (made["audio2"], made["events2"]))
    ):
        key = f"{split}_{2 * pair + j:06d}"
        label = ",".join(sorted({e.cls for e in events}))
        out.append({"key": key, "audio": features_lib.to_int16(audio), "label": label})
    return out


def synthetic_clip(spec: SyntheticClipsSpec, split: str, index: int) -> dict[str, Any]:
    """The stored record `index` of `split` of the variant `spec` (made without a build)."""
    return _pair_clips(spec, split, index // 2)[index % 2]


def _synthetic_records(task: tuple[SyntheticClipsSpec, str, int, int]) -> tuple[list[bytes], int]:
    """(the first `count` serialised clips of a pair, 0 dropped samples); workers run it."""
    spec, split, pair, count = task
    return [serialize_clip(c) for c in _pair_clips(spec, split, pair)[:count]], 0


# ----------------------------------------------------------------------------- audio_folder


@dataclasses.dataclass(frozen=True)
class AudioFile:
    """One file of an audio folder: path relative to the folder, size in bytes, mtime in ns."""

    path: str
    size: int
    mtime_ns: int

    @property
    def label(self) -> str:
        """The name of the folder holding the file ("" at the top of the tree)."""
        return os.path.basename(os.path.dirname(self.path))


def list_audio_files(root: str) -> tuple[AudioFile, ...]:
    """Every audio file under `root` (any depth; hidden files and folders skipped), sorted.

    Raises:
      FileNotFoundError: `root` is not a directory or holds no audio file.
    """
    if not os.path.isdir(root):
        raise MissingData(
            f"data.audio_dir={root!r} is not a directory; point it at a folder of audio files "
            f"({', '.join(AUDIO_EXTENSIONS[:3])}, ...), in sub-folders or not."
        )
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or not name.lower().endswith(AUDIO_EXTENSIONS):
                continue
            path = os.path.join(folder, name)
            stat = os.stat(path)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            files.append(AudioFile(rel, int(stat.st_size), int(stat.st_mtime_ns)))
    if not files:
        raise MissingData(
            f"data.audio_dir={root!r} holds no audio file (looked for names ending in "
            f"{', '.join(AUDIO_EXTENSIONS)} in every sub-folder)."
        )
    return tuple(sorted(files, key=lambda f: f.path))


def held_out_recordings(root: str) -> frozenset[str]:
    """The relative paths ("/"-separated) of the recordings `clip_sources` puts in the eval split
    of `root`: ESC-50's fold 5, FSD50K's eval set, or per class folder the files with the lowest
    path hashes (`clip_sources.folder_held_out`). These are the clips `clip_pairs` evaluates on
    and `tools/linear_probe.py --data_dir` tests on.

    Raises:
      MissingData: `root` is in none of those layouts (names the accepted ones).
    """
    try:
        index = clip_sources.index_sources(root)
    except MissingData as e:
        raise MissingData(
            f"data.exclude_held_out=True needs data.audio_dir in a layout whose held-out "
            f"recordings are defined: {e} Set data.exclude_held_out=False to pretrain on every "
            "file."
        ) from None
    return frozenset(r.path.replace(os.sep, "/") for r in index.recordings if r.split == "eval")


def _hash_position(path: str) -> float:
    """The SHA-256 of a relative path as a number in [0, 1)."""
    return int(hashlib.sha256(path.encode("utf-8")).hexdigest()[:16], 16) / 2.0**64


def folder_split(path: str, fraction: float = VALIDATION_FRACTION) -> str:
    """The split of a file: validation when the hash of its relative path is in the lowest
    `fraction` of hash values, else train."""
    return "validation" if _hash_position(path) < fraction else "train"


def _assign_splits(files: Sequence[AudioFile], fraction: float) -> dict[str, list[AudioFile]]:
    """Files per split by `folder_split`; an empty split takes the file nearest to it (the
    lowest hash for validation, the highest for train), so both splits hold a file."""
    splits: dict[str, list[AudioFile]] = {s: [] for s in SPLITS}
    for f in files:
        splits[folder_split(f.path, fraction)].append(f)
    if not splits["validation"]:
        first = min(splits["train"], key=lambda f: _hash_position(f.path))
        splits["train"].remove(first)
        splits["validation"].append(first)
    if not splits["train"]:
        last = max(splits["validation"], key=lambda f: _hash_position(f.path))
        splits["validation"].remove(last)
        splits["train"].append(last)
    return splits


@dataclasses.dataclass(frozen=True)
class AudioFolderSpec:
    """What defines an audio_folder build (with the files found under audio_dir).

    Attributes:
      audio_dir: the folder tree of audio files.
      clip_seconds: length of each clip (> 0).
      sample_rate: Hz of the stored audio (files are resampled to it).
      validation_fraction: share of the files in validation, in (0, 1).
      exclude_held_out: leave out the recordings that `clip_sources` holds out for evaluation
        in audio_dir's layout (`held_out_recordings`), so the same collection can pretrain the
        encoder and then test it (linear probe, clip_pairs eval) on recordings it never heard.
    """

    audio_dir: str
    clip_seconds: float
    sample_rate: int = features_lib.SAMPLE_RATE
    validation_fraction: float = VALIDATION_FRACTION
    exclude_held_out: bool = False

    def __post_init__(self) -> None:
        if not self.audio_dir:
            raise ValueError(
                "data.name='audio_folder' needs data.audio_dir: a folder of audio files (WAV, "
                "FLAC, OGG, ...; any rate and length, in sub-folders or not)."
            )
        paths.require_local(self.audio_dir, "data.audio_dir", paths.SOURCE_WHY)
        if not self.clip_seconds > 0:
            raise ValueError(f"data.clip_seconds={self.clip_seconds!r} must be positive.")
        if not (isinstance(self.sample_rate, int) and self.sample_rate > 0):
            raise ValueError(f"data.sample_rate={self.sample_rate!r} must be a positive integer.")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction={self.validation_fraction!r} must be in (0, 1).")
        object.__setattr__(
            self, "audio_dir", os.path.abspath(os.path.expanduser(str(self.audio_dir)))
        )
        object.__setattr__(self, "clip_seconds", float(self.clip_seconds))

    @classmethod
    def from_config(cls, data_config: Any) -> AudioFolderSpec:
        """The spec of a pretraining `config.data` section (validation_fraction and
        exclude_held_out if it has them)."""
        fraction = (
            data_config.validation_fraction
            if "validation_fraction" in data_config
            else VALIDATION_FRACTION
        )
        return cls(
            audio_dir=data_config.audio_dir,
            clip_seconds=data_config.clip_seconds,
            sample_rate=data_config.sample_rate,
            validation_fraction=float(fraction),
            exclude_held_out=bool(data_config.get("exclude_held_out", False)),
        )

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))


def _fingerprint(spec: AudioFolderSpec, files: Sequence[AudioFile]) -> str:
    h = hashlib.sha256()
    head = {
        "generation": GENERATION_VERSION,
        "clip_seconds": repr(spec.clip_seconds),
        "sample_rate": spec.sample_rate,
        "validation_fraction": repr(spec.validation_fraction),
        "min_last_piece": repr(MIN_LAST_PIECE),
    }
    if spec.exclude_held_out:  # only when set, so the names of earlier builds stay valid
        head["exclude_held_out"] = True
    h.update(json.dumps(head, sort_keys=True).encode())
    for f in files:
        h.update(f"\n{f.path}\t{f.size}\t{f.mtime_ns}".encode())
    return h.hexdigest()[:16]


def clip_bounds(num_samples: int, clip_samples: int) -> list[tuple[int, int]]:
    """[start, end) of every clip cut from a file of `num_samples` (see the module docstring)."""
    full, rest = divmod(num_samples, clip_samples)
    bounds = [(i * clip_samples, (i + 1) * clip_samples) for i in range(full)]
    if rest and (full == 0 or rest >= MIN_LAST_PIECE * clip_samples):
        bounds.append((full * clip_samples, num_samples))
    return bounds


def _file_records(task: tuple[str, str, str, int, int]) -> tuple[list[bytes], int]:
    """(the serialised clips of one file, samples of a dropped last piece); workers run it."""
    path, rel, label, sample_rate, clip_samples = task
    wav = load_audio(path, sample_rate)
    bounds = clip_bounds(wav.shape[0], clip_samples)
    records = [
        serialize_clip(
            {"key": f"{rel}@{i}", "audio": features_lib.to_int16(wav[a:b]), "label": label}
        )
        for i, (a, b) in enumerate(bounds)
    ]
    return records, wav.shape[0] - (bounds[-1][1] if bounds else 0)


# ------------------------------------------------------------------------------ the builders


def _flatten(results: Iterator[tuple[list[bytes], int]], dropped: list[int]) -> Iterator[bytes]:
    """The records of every (records, dropped samples) result; sums the drops in dropped[0]."""
    for made, lost in results:
        dropped[0] += lost
        yield from made


class _ClipBuilder(builder_lib.Builder, skip_registration=True):
    """What both clip builders add to the shared base: the clip schema, and splits whose items
    give any number of records each."""

    def _features(self) -> tfds.features.FeaturesDict:
        return clip_features()

    def _description(self) -> str:
        return "Audio clips for self-supervised pretraining. " + self.builder_config.description

    def _write_splits(
        self, jobs: Mapping[str, tuple[Any, Sequence[Any]]]
    ) -> list[tfds.core.SplitInfo]:
        """Writes each split from fn(item) -> (records, dropped samples), records in item order
        (a file gives as many clips as it holds, so the base's one record per item does not do)."""
        num_workers = self.builder_config.num_workers
        writer_lib.begin_splits(
            self, jobs, num_workers=num_workers, expand=lambda r: _flatten(r, [0])
        )  # a sharded build (`adc_jax.build_data`) writes a shard here, or checks the shards
        infos = []
        for split, (fn, items) in jobs.items():
            workers = writer_lib.resolve_workers(num_workers, len(items))
            dropped = [0]
            start = time.perf_counter()
            expand = functools.partial(_flatten, dropped=dropped)
            with writer_lib.split_records(self, split, fn, items, workers, expand) as records:
                info = writer_lib.write_split(
                    self._get_filename_template(split_name=split),
                    records,
                    desc=f"Generating {self.name} {split}",
                )
            logging.info(
                "%s/%s: wrote %d %s clips (%.1f MiB) in %.1f s (%d processes)%s.",
                self.name,
                self.builder_config.name,
                sum(info.shard_lengths),
                split,
                info.num_bytes / 2**20,
                time.perf_counter() - start,
                workers,
                f"; {dropped[0]} samples of last pieces under half a clip left out"
                if dropped[0]
                else "",
            )
            infos.append(info)
        return infos


@dataclasses.dataclass(eq=False, kw_only=True)
class SyntheticClipsConfig(builder_lib.BuildConfig):
    """A synthetic_clips variant: its spec (which names it) and the build parallelism."""

    spec: SyntheticClipsSpec


class SyntheticClips(_ClipBuilder):
    """tfds builder of synthetic clips (see the module docstring): record i of a split is clip
    i % 2 + 1 of pair i // 2 (scenes) or single-event clip i (events), keyed "<split>_<i:06d>"."""

    name = "synthetic_clips"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Both clips of synthetic_adc-style pairs (or single-event clips), labelled by "
        "classes."
    }

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager  # nothing to download
        sizes = self.builder_config.spec.split_sizes
        return {split: self._generate_examples(split, num) for split, num in sizes.items()}

    def _generate_examples(self, split: str, num: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """tfds' standard example stream (`_generate_splits` writes the same records)."""
        for i in range(num):
            clip = synthetic_clip(self.builder_config.spec, split, i)
            yield clip["key"], clip

    def _split_jobs(self) -> Mapping[str, tuple[Any, Sequence[Any]]]:
        """Both clips of pair j per item (the last item of an odd split only the first)."""
        spec = self.builder_config.spec
        return {
            split: (
                _synthetic_records,
                [(spec, split, j, min(2, num - 2 * j)) for j in range((num + 1) // 2)],
            )
            for split, num in spec.split_sizes.items()
        }


@dataclasses.dataclass(eq=False, kw_only=True)
class AudioFolderConfig(builder_lib.BuildConfig):
    """An audio_folder build: its spec, the files found (which name it) and the parallelism."""

    spec: AudioFolderSpec
    # Not in the repr: tfds logs the config, and this lists every file.
    splits: Mapping[str, tuple[AudioFile, ...]] = dataclasses.field(repr=False)


class AudioFolder(_ClipBuilder):
    """tfds builder of clips cut from a folder of audio files (see the module docstring):
    records in file order, then clip order, keyed "<relative path>@<clip index>"."""

    name = "audio_folder"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Clips of data.clip_seconds cut from every file of a folder."}

    def _tasks(self, split: str) -> list[tuple[str, str, str, int, int]]:
        c = self.builder_config
        return [
            (
                os.path.join(c.spec.audio_dir, f.path),
                f.path,
                f.label,
                c.spec.sample_rate,
                c.spec.clip_samples,
            )
            for f in c.splits[split]
        ]

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager  # the user provides the audio
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """tfds' standard example stream (`_generate_splits` writes the same records)."""
        for task in self._tasks(split):
            for record in _file_records(task)[0]:
                clip = parse_clip(record)
                yield clip["key"].decode(), clip

    def _split_jobs(self) -> Mapping[str, tuple[Any, Sequence[Any]]]:
        """Probes every file (warns about truncated and short ones); then each file is decoded
        once by the writer's workers and its clips written in file order."""
        c = self.builder_config
        check_clip_lengths(
            [(f.path, os.path.join(c.spec.audio_dir, f.path)) for s in SPLITS for f in c.splits[s]],
            dataset=f"audio_folder {c.spec.audio_dir}",
            nominal_seconds=c.spec.clip_seconds,
            min_fraction=0.0,
        )
        return {split: (_file_records, self._tasks(split)) for split in SPLITS}


def build_synthetic_clips(
    data_dir: str, spec: SyntheticClipsSpec, *, num_workers: int | None = None
) -> tfds.core.DatasetBuilder:
    """Returns the prepared synthetic_clips builder of `spec`, building it if missing.

    Args:
      data_dir: root directory of tfds datasets ("~" is expanded).
      spec: the variant (`SyntheticClipsSpec.from_config(config.data)`).
      num_workers: generation processes (default: all CPUs); does not change the data.
    """
    config = SyntheticClipsConfig(
        name=spec.config_name,
        spec=spec,
        num_workers=num_workers,
        description=f"{spec.num_train}/{spec.num_validation} synthetic {spec.kind} clips of "
        f"{spec.clip_seconds:g} s at {spec.sample_rate} Hz, seed {spec.seed}.",
    )
    return SyntheticClips.prepare(config, os.path.expanduser(data_dir), "clips")


def build_audio_folder(
    data_dir: str, spec: AudioFolderSpec, *, num_workers: int | None = None
) -> tfds.core.DatasetBuilder:
    """Returns the prepared audio_folder builder of `spec`'s folder, building it if missing.

    Args:
      data_dir: root directory of tfds datasets ("~" is expanded).
      spec: the build (`AudioFolderSpec.from_config(config.data)`).
      num_workers: decoding processes (default: all CPUs); does not change the data.

    Raises:
      FileNotFoundError: no such folder, or no audio file in it.
      ValueError: fewer than two files (the validation split needs one of its own).
      AudioError: a file is empty or cannot be decoded (names it).
    """
    files = list_audio_files(spec.audio_dir)
    held_out = 0
    if spec.exclude_held_out:
        excluded = held_out_recordings(spec.audio_dir)
        kept = tuple(f for f in files if f.path not in excluded)
        held_out = len(files) - len(kept)
        logging.info(
            "audio_folder: %d of %d files left out (the held-out recordings of %s).",
            held_out,
            len(files),
            spec.audio_dir,
        )
        if not kept:
            raise BadData(
                f"data.audio_dir={spec.audio_dir!r}: every file is a held-out recording, so "
                "data.exclude_held_out=True leaves nothing to pretrain on."
            )
        files = kept
    if len(files) < 2:
        raise BadData(
            f"data.audio_dir={spec.audio_dir!r} holds one audio file ({files[0].path}); the "
            "validation split takes whole files, so it needs two or more. Cut the recording "
            "into several files."
        )
    splits = _assign_splits(files, spec.validation_fraction)
    clip = f"{spec.clip_seconds:g}".replace(".", "p")
    sources = source_files.Sources(
        {"audio_dir": os.path.abspath(spec.audio_dir), **dataclasses.asdict(spec)},
        tuple(source_files.SourceFile(f.path, f.size, f.mtime_ns) for f in files),
    )
    config = AudioFolderConfig(
        name=f"{clip}s_sr{spec.sample_rate}_fp{_fingerprint(spec, files)}",
        spec=spec,
        splits={s: tuple(fs) for s, fs in splits.items()},
        num_workers=num_workers,
        sources=sources,
        description=f"Clips of {spec.clip_seconds:g} s at {spec.sample_rate} Hz from the "
        f"{len(files)} audio files under {spec.audio_dir} ({len(splits['validation'])} files "
        f"in validation; {held_out} held-out recordings left out).",
    )
    return AudioFolder.prepare(config, os.path.expanduser(data_dir), "clips")


def _synthetic_clips(root: str, d: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    return build_synthetic_clips(root, SyntheticClipsSpec.from_config(d))


# The pretraining clip datasets by data.name (`adc_jax.data.registry`: the same data_dir).
CLIP_DATASETS = registry.Registry(
    "a clip dataset",
    {
        "synthetic_clips": _synthetic_clips,
        "synthetic_events": _synthetic_clips,
        "audio_folder": lambda root, d: build_audio_folder(root, AudioFolderSpec.from_config(d)),
    },
)


def load_clip_source(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """The prepared tfds builder of a pretraining config's `data` section (built on first use).

    Reads data.name ("synthetic_clips", "synthetic_events" or "audio_folder"), data.data_dir
    ("" = the default cache), data.clip_seconds, data.sample_rate and either data.num_train,
    data.num_validation, data.synth_seed (synthetic) or data.audio_dir (folder). Read a split with
    `builder.as_data_source("train")`; records hold key, audio ([N] int16), label.
    """
    return CLIP_DATASETS.load(config)


# ------------------------------------------------------------------------- training batches


def _audio(record: Any) -> np.ndarray:
    """The [N] int16 waveform of a serialised or decoded record (picklable map for grain)."""
    if isinstance(record, bytes):
        feature = tf_example_pb2.Example.FromString(record).features.feature
        return np.frombuffer(feature["audio"].bytes_list.value[0], np.int16)
    return np.asarray(record["audio"], np.int16)


class _ClipBatch:
    """Collates waveforms into {"wav": [b, N] int16, "wav_len": [b] int32} (picklable)."""

    def __init__(self, n_samples: int):
        self.n_samples = n_samples

    def __call__(self, wavs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        out, lengths = pipeline.waveform_batch(wavs, self.n_samples)
        return {"wav": out, "wav_len": lengths}


def clip_batches(
    source: Sequence[Any],
    config: ml_collections.ConfigDict,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
    """The infinite, shuffled, batched pretraining stream of this process.

    Process p reads the records p, p + P, p + 2P, ... of the first P * floor(n / P) (P =
    process_count), so processes read disjoint records and as many each; the order is a new
    permutation every epoch, a function of config.seed alone. Batches hold b =
    train.batch_size / P clips (drop_remainder), each cropped (its end) or zero-padded to
    N = round(data.clip_seconds * data.sample_rate) samples.

    Args:
      source: a split of `load_clip_source(config)` (`builder.as_data_source("train")`), or
        any sequence of records with an "audio" [N] int16 field.
      config: reads train.batch_size, seed, data.clip_seconds, data.sample_rate,
        data.prefetch (batches prepared ahead by threads) and data.num_workers (worker
        processes; 0 = none).
      process_index, process_count: this process and how many read the data.

    Returns:
      A grain IterDataset; `iter()` of it has `get_state()` / `set_state()`.

    Raises:
      ValueError: the batch does not divide among the processes, or the split has fewer
        records than one batch per process.
    """
    local_batch = pipeline.local_batch_size(config, process_count)
    n_samples = pipeline.clip_samples(config)
    # The serialised records of a tfds data source (None: decoded records, e.g. a list).
    raw = pipeline.raw_records(source, fields=("audio",), waveforms=("audio",))
    ds = pipeline.shuffled_shard(
        grain.MapDataset.source(source if raw is None else raw),
        config,
        process_index,
        process_count,
        local_batch,
        unit="clips",
        advice="lower config.train.batch_size or add data",
    )
    ds = ds.map(_audio)
    ds = ds.batch(local_batch, drop_remainder=True, batch_fn=_ClipBatch(n_samples))
    return pipeline.prefetched(ds, config)
