"""Input pipelines: tfds `array_record` data sources -> grain -> NumPy batches.

Host work is only indexing records, picking a reference caption, tokenising and padding/cropping
int16 waveforms; the log-mel runs on the device inside the jitted step.

Training (`train_dataset`): per-process shard -> seeded shuffle (a new order every epoch) ->
repeat -> a random reference caption per pair per epoch -> tokens -> batches of
batch_size / process_count with drop_remainder, the waveforms padded/cropped straight into the
batch arrays -> prefetch threads -> optional worker processes. The grain iterator's state is saved
with every checkpoint, so a resumed run sees the same data order.

Evaluation (`eval_batches`): the split in its stored order, every reference kept, the last batch
padded (rows marked invalid), each process taking its rows of every global batch.

Batch fields (NumPy, this process's rows):
  wav1, wav2 [b, N] int16; wav1_len, wav2_len [b] int32; tokens [b, L] int32 (training);
  eval batches add valid [b] bool and index [b] int64 (position in the split).

Data that does not fit the model, and what happens to it:
  clip longer than N samples   the end is cropped, length N;
  clip shorter than N          zero-padded, length = its samples (the model masks the rest);
  caption longer than L tokens its first L - 2 words are kept, then <eos> (counted and logged by
                               `build_or_load_vocab`);
  word not in the vocabulary   <unk> (captions holding one are counted and logged);
  pair without any caption     trained towards the empty caption [<bos>, <eos>] (neither builder
                               writes one; `read_captions` counts and logs them with their keys).
Missing, empty, corrupt, stereo or other-rate audio never reaches the pipeline: the builders
convert it (mono, 16 kHz) or fail naming the key and file (`audio_io`, `audiodiffcaps`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
from absl import logging
from tensorflow_datasets.proto import tf_example_pb2

from adc_jax.config import default_data_dir
from adc_jax.data.audiodiffcaps import build_audio_diff_caps
from adc_jax.data.features import as_text
from adc_jax.data.synthetic import SyntheticSpec, build_synthetic
from adc_jax.data.tokenizer import PAD, UNK, Vocabulary, words
from adc_jax.data.waveform import fit_length

# Reading threads per process feeding the batch prefetch buffer (capped by data.prefetch).
MAX_READ_THREADS = 4


def data_dir(config: ml_collections.ConfigDict) -> str:
    """The tfds data directory of `config.data` ("" -> the default cache directory)."""
    return os.path.expanduser(config.data.data_dir or default_data_dir())


def load_builder(config: ml_collections.ConfigDict):
    """The prepared tfds builder of `config.data` (built on first use)."""
    d = config.data
    if d.name == "synthetic_adc":
        return build_synthetic(data_dir(config), SyntheticSpec.from_config(d))
    if d.name == "audio_diff_caps":
        return build_audio_diff_caps(
            data_dir(config),
            audio_dir=os.path.expanduser(d.audio_dir),
            csv_dir=os.path.expanduser(d.csv_dir),
            validation_fraction=d.validation_fraction,
            sample_rate=d.sample_rate,
        )
    raise ValueError(f"config.data.name={d.name!r} is not a known dataset.")


def clip_samples(config: ml_collections.ConfigDict) -> int:
    """The configured clip length N in samples (clip_seconds * sample_rate)."""
    return int(round(config.data.clip_seconds * config.data.sample_rate))


def _waveform_batch(wavs: Sequence[np.ndarray], n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """[b, n_samples] int16 (each [N] clip cropped/zero-padded) and [b] int32 valid lengths.

    One copy per clip, from the record straight into its row of the batch (`fit_length` with
    out=row: no padded temporaries).
    """
    out = np.empty((len(wavs), n_samples), np.int16)
    lengths = np.empty((len(wavs),), np.int32)
    for i, wav in enumerate(wavs):
        _, lengths[i], _ = fit_length(np.asarray(wav, np.int16), n_samples, out=out[i])
    return out, lengths


# ---------------------------------------------------------------------------------- records

# The fields training reads from a record.
_TRAIN_FIELDS = ("key", "audio1", "audio2", "captions")


def raw_records(source: Sequence[Any]) -> Sequence[bytes] | None:
    """The serialised records under a tfds data source of the shared schema, or None.

    Training decodes only the fields it needs from them (`parse_train_fields`): tfds' generic
    decoding of all eight features costs more CPU than reading the record. None (use the decoded
    records) for any other source: in-memory records, custom decoders, or a schema whose
    waveforms are not stored as raw bytes.
    """
    raw = getattr(source, "data_source", None)
    info = getattr(source, "dataset_info", None)
    if raw is None or info is None or getattr(source, "decoders", None):
        return None
    method = getattr(source, "deserialize_method", None)
    if method is None or method.name != "DESERIALIZE_AND_DECODE":
        return None
    features = info.features
    if features is None or any(name not in features for name in _TRAIN_FIELDS):
        return None
    # Encoding.BYTES tensors are stored as one bytes value (serialised shape ()).
    for name in ("audio1", "audio2"):
        serialized = features[name].get_serialized_info()
        if serialized.shape != () or np.dtype(features[name].np_dtype) != np.int16:
            return None
    return raw


def parse_train_fields(record: bytes) -> dict[str, Any]:
    """key, audio1, audio2 and captions of one serialised record, as tfds decodes them.

    The waveforms are read-only int16 views of the record (np.frombuffer, as tfds does for
    Encoding.BYTES); key and captions are bytes.
    """
    # tfds ships the tf.train.Example message class; no TensorFlow needed.
    feature = tf_example_pb2.Example.FromString(record).features.feature
    return {
        "key": feature["key"].bytes_list.value[0],
        "audio1": np.frombuffer(feature["audio1"].bytes_list.value[0], np.int16),
        "audio2": np.frombuffer(feature["audio2"].bytes_list.value[0], np.int16),
        "captions": list(feature["captions"].bytes_list.value),
    }


# ---------------------------------------------------------------------------------- captions


@dataclasses.dataclass
class CaptionStats:
    """What the training captions look like; logged at start so nothing changes silently.

    Attributes:
      num_pairs: pairs in the split.
      num_captions: reference captions over all pairs.
      captions: every reference caption, pair by pair, in stored order.
      pairs_without_captions: pairs with no reference (trained towards the empty caption).
      keys_without_captions: the keys of those pairs (at most 20).
    """

    num_pairs: int
    num_captions: int
    captions: list[str]
    pairs_without_captions: int
    keys_without_captions: list[str] = dataclasses.field(default_factory=list)


def read_captions(source: Sequence[dict[str, Any]]) -> tuple[list[list[str]], CaptionStats]:
    """All reference captions of a split, per pair, in stored order, and their counts (logged)."""
    per_pair, empty_keys = [], []
    for i in range(len(source)):
        record = source[i]
        captions = [as_text(c) for c in record["captions"]]
        if not captions:
            empty_keys.append(as_text(record["key"]))
        per_pair.append(captions)
    flat = [c for cs in per_pair for c in cs]
    stats = CaptionStats(len(per_pair), len(flat), flat, len(empty_keys), empty_keys[:20])
    logging.info("Read %d captions of %d pairs.", stats.num_captions, stats.num_pairs)
    if empty_keys:
        logging.warning(
            "%d pair(s) have no reference caption and are trained towards the empty caption "
            "[<bos>, <eos>]; first keys: %s.",
            len(empty_keys),
            ", ".join(stats.keys_without_captions),
        )
    return per_pair, stats


@dataclasses.dataclass
class TokenStats:
    """How the captions fit a vocabulary and a token budget (`token_stats`)."""

    num_captions: int
    truncated: int  # captions longer than max_tokens (incl. <bos>/<eos>): cut, <eos> kept
    with_unknown: int  # captions holding at least one word outside the vocabulary (-> <unk>)
    unknown_words: int  # such words, counted with repetition


def token_stats(vocab: Vocabulary, captions: Sequence[str], max_tokens: int) -> TokenStats:
    """Counts the captions that `vocab.encode(caption, max_tokens)` truncates or maps to <unk>."""
    truncated = with_unknown = unknown_words = 0
    for caption in captions:
        ids, cut = vocab.encode(caption, max_tokens)
        truncated += cut
        unknown = sum(vocab.index.get(w, UNK) == UNK for w in words(caption))
        with_unknown += unknown > 0
        unknown_words += unknown
    return TokenStats(len(captions), truncated, with_unknown, unknown_words)


def build_or_load_vocab(
    path: str, captions: Sequence[str], min_count: int, max_tokens: int
) -> Vocabulary:
    """Loads the run's vocabulary, or builds it from the training captions and saves it.

    Either way, logs how many training captions will be truncated to max_tokens and how many
    hold words that become <unk>.
    """
    if os.path.exists(path):
        vocab = Vocabulary.load(path)
        logging.info("Vocabulary: %d tokens from %s.", len(vocab), path)
    else:
        vocab = Vocabulary.build(captions, min_count=min_count)
        vocab.save(path)
        logging.info(
            "Vocabulary: %d tokens built from %d training captions (words seen >= %d times), "
            "saved to %s.",
            len(vocab),
            len(captions),
            min_count,
            path,
        )
    stats = token_stats(vocab, captions, max_tokens)
    logging.info(
        "Training captions: %d of %d longer than %d tokens will be truncated (keeping <eos>); "
        "%d hold %d word(s) outside the vocabulary, which become <unk>.",
        stats.truncated,
        stats.num_captions,
        max_tokens,
        stats.with_unknown,
        stats.unknown_words,
    )
    return vocab


# ---------------------------------------------------------------------------------- training


class _PrepareTrainExample:
    """(index in the repeated dataset, record) -> one training example; picklable for workers.

    The record is a decoded dict, or a serialised one (`raw_records`) that is parsed here. The
    waveforms stay views of the record (cropped/padded by `_TrainBatch`); only the chosen
    reference caption is decoded, and its tokens are cached per caption text.
    """

    def __init__(self, vocab: Vocabulary, n_samples: int, max_tokens: int, seed: int):
        self.vocab, self.n_samples, self.max_tokens, self.seed = vocab, n_samples, max_tokens, seed
        self._tokens: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokens": {}}  # workers build their own cache

    def tokens(self, caption: str) -> np.ndarray:
        """[max_tokens] int32: <bos> words <eos>, then <pad> (cached; do not modify)."""
        tokens = self._tokens.get(caption)
        if tokens is None:
            ids, _ = self.vocab.encode(caption, self.max_tokens)
            tokens = np.full((self.max_tokens,), PAD, np.int32)
            tokens[: len(ids)] = ids
            self._tokens[caption] = tokens
        return tokens

    def __call__(self, index: int, record: dict[str, Any] | bytes) -> dict[str, Any]:
        if isinstance(record, bytes):
            record = parse_train_fields(record)
        captions = record["captions"]
        # A different reference each epoch, the same one on a resumed run.
        rng = np.random.default_rng([self.seed, index])
        caption = as_text(captions[rng.integers(len(captions))]) if len(captions) else ""
        return {"wav1": record["audio1"], "wav2": record["audio2"], "tokens": self.tokens(caption)}


class _TrainBatch:
    """Collates prepared examples into a training batch (picklable batch_fn for grain)."""

    def __init__(self, n_samples: int):
        self.n_samples = n_samples

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        wav1, len1 = _waveform_batch([e["wav1"] for e in examples], self.n_samples)
        wav2, len2 = _waveform_batch([e["wav2"] for e in examples], self.n_samples)
        tokens = np.stack([e["tokens"] for e in examples])
        return {"wav1": wav1, "wav1_len": len1, "wav2": wav2, "wav2_len": len2, "tokens": tokens}


def train_dataset(
    source: Sequence[dict[str, Any]],
    vocab: Vocabulary,
    config: ml_collections.ConfigDict,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
    """The infinite, shuffled, batched training stream of this process (see module docstring).

    Process p reads the records p, p + P, p + 2P, ... of the first P * floor(len / P) records
    (P = process_count), so processes read disjoint rows and the same number of them; each
    yields batches of train.batch_size / P rows.
    """
    global_batch = config.train.batch_size
    if global_batch % process_count:
        raise ValueError(
            f"config.train.batch_size={global_batch} must be divisible by the "
            f"number of processes ({process_count})."
        )
    local_batch = global_batch // process_count
    n_samples = clip_samples(config)
    raw = raw_records(source)
    ds = grain.MapDataset.source(source if raw is None else raw)
    usable = len(ds) // process_count * process_count
    ds = ds[:usable][process_index::process_count]
    if len(ds) < local_batch:
        raise ValueError(
            f"The training split has {len(source)} pairs, fewer than one batch per "
            f"process ({local_batch}); lower config.train.batch_size."
        )
    ds = ds.shuffle(seed=config.seed % 2**32).repeat()
    ds = ds.map_with_index(
        _PrepareTrainExample(vocab, n_samples, config.data.max_caption_tokens, config.seed)
    )
    ds = ds.batch(local_batch, drop_remainder=True, batch_fn=_TrainBatch(n_samples))
    # Batches are prepared by a few threads ahead of the training loop (prefetch = batches).
    prefetch = config.data.prefetch
    iter_ds = ds.to_iter_dataset(
        grain.ReadOptions(
            num_threads=min(MAX_READ_THREADS, prefetch) if prefetch else 0,
            prefetch_buffer_size=prefetch,
        )
    )
    if config.data.num_workers > 0:
        iter_ds = iter_ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=config.data.num_workers, per_worker_buffer_size=max(prefetch, 1)
            )
        )
    return iter_ds


# ---------------------------------------------------------------------------------- evaluation


@dataclasses.dataclass
class EvalSplit:
    """A split loaded for evaluation: keys, references and labels in stored order."""

    source: Sequence[dict[str, Any]]
    keys: list[str]
    references: list[list[str]]
    edits: list[list[tuple[str, str]]]
    scenes: list[str]


def load_eval_split(source: Sequence[dict[str, Any]], max_examples: int = 0) -> EvalSplit:
    """Reads the metadata of (the first max_examples pairs of) a split.

    A key that repeats gets "#2", "#3", ... appended so predictions stay one per pair.
    """
    n = len(source) if not max_examples else min(max_examples, len(source))
    keys, refs, edits, scenes = [], [], [], []
    seen: collections.Counter[str] = collections.Counter()
    for i in range(n):
        r = source[i]
        key = as_text(r["key"])
        seen[key] += 1
        keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
        refs.append([as_text(c) for c in r["captions"]])
        edits.append(
            [
                (as_text(o), as_text(c))
                for o, c in zip(r["edit_ops"], r["edit_classes"], strict=True)
            ]
        )
        scenes.append(as_text(r["scene"]))
    return EvalSplit(source, keys, refs, edits, scenes)


def eval_batches(
    split: EvalSplit,
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Batches over the split in order; rows past the end repeat the last pair with valid=False.

    Process p takes rows [p * b/P, (p + 1) * b/P) of every global batch of b = batch_size rows.
    """
    if batch_size % process_count:
        raise ValueError(
            f"The eval batch size {batch_size} must be divisible by the number of processes "
            f"({process_count})."
        )
    n_samples = clip_samples(config)
    n = len(split.keys)
    local = batch_size // process_count
    for start in range(0, n, batch_size):
        rows = np.arange(start + process_index * local, start + (process_index + 1) * local)
        index = np.minimum(rows, n - 1)
        records = [split.source[int(i)] for i in index]
        wav1, len1 = _waveform_batch([r["audio1"] for r in records], n_samples)
        wav2, len2 = _waveform_batch([r["audio2"] for r in records], n_samples)
        yield {
            "wav1": wav1,
            "wav2": wav2,
            "wav1_len": len1,
            "wav2_len": len2,
            "valid": rows < n,
            "index": index.astype(np.int64),
        }
