"""Input pipelines: tfds `array_record` data sources -> grain -> NumPy batches.

This module holds the streams only: the dataset of a config is `registry.load_builder`, its
captions and the run's vocabulary are `vocab`, a split loaded for evaluation is
`eval_split.EvalSplit`.

Host work is only indexing records, picking a reference caption, tokenising and padding/cropping
int16 waveforms; the log-mel runs on the device inside the jitted step.

Training (`train_dataset`): per-process shard -> seeded shuffle (a new order every epoch) ->
repeat -> a random reference caption per pair per epoch -> tokens -> batches of
batch_size / process_count with drop_remainder, the waveforms padded/cropped straight into the
batch arrays -> prefetch threads -> optional worker processes. With `data.token_buckets`, a
`BucketPlan` groups the batches by caption length instead. The grain iterator's state is saved
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
                               `vocab.build_or_load_vocab`);
  word not in the vocabulary   <unk> (captions holding one are counted and logged);
  pair without any caption     trained towards the empty caption [<bos>, <eos>] (no builder
                               writes one; `vocab.read_captions` counts and logs them with
                               their keys).
Missing, empty, corrupt, stereo or other-rate audio never reaches the pipeline: the builders
convert it (mono, 16 kHz) or fail naming the key and file (`audio_io`, `audiodiffcaps`).

Public API:
  train_dataset(source, vocab, config, ...)   this process's infinite training stream.
  BucketPlan                                  the batches of a length-bucketed stream.
  eval_batches(split, config, ...)            the batches of an `EvalSplit`, in order (its
                                              pairs as stored, swapped or as clip 1 twice).
  clip_samples(config), local_batch_size(config, process_count)
  raw_records(source), parse_train_fields(record)   the serialised records, read directly.
  shuffled_shard, waveform_batch, prefetched  stream pieces the pretraining clips share.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
from tensorflow_datasets.proto import tf_example_pb2

from adc_jax.config import parse_buckets
from adc_jax.data.clip_store import JoinedPairs
from adc_jax.data.errors import BadData
from adc_jax.data.eval_split import EvalSplit
from adc_jax.data.features import as_text, caption_tiers
from adc_jax.data.tokenizer import BOS, PAD, Vocabulary
from adc_jax.data.vocab import CaptionStats, read_captions, split_tiers
from adc_jax.data.waveform import fit_length

# Reading threads per process feeding the batch prefetch buffer (capped by data.prefetch).
MAX_READ_THREADS = 4


def clip_samples(config: ml_collections.ConfigDict) -> int:
    """The configured clip length N in samples (clip_seconds * sample_rate)."""
    return int(round(config.data.clip_seconds * config.data.sample_rate))


def local_batch_size(config: ml_collections.ConfigDict, process_count: int) -> int:
    """This process's rows of every training batch: train.batch_size / process_count.

    Raises:
      ValueError: the batch does not divide among the processes.
    """
    global_batch = config.train.batch_size
    if global_batch % process_count:
        raise ValueError(
            f"config.train.batch_size={global_batch} must be divisible by the "
            f"number of processes ({process_count})."
        )
    return global_batch // process_count


def waveform_batch(wavs: Sequence[np.ndarray], n_samples: int) -> tuple[np.ndarray, np.ndarray]:
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

# The fields training reads from a record (and caption_tiers where the dataset has it).
_TRAIN_FIELDS = ("key", "audio1", "audio2", "captions")


def raw_records(
    source: Sequence[Any],
    fields: Sequence[str] = _TRAIN_FIELDS,
    waveforms: Sequence[str] = ("audio1", "audio2"),
) -> Sequence[bytes] | None:
    """The serialised records under a tfds data source whose schema has `fields`, or None.

    A split whose pairs name their clips (`clip_store.JoinedPairs`) gives its training view
    instead, whose items are already the dicts `parse_train_fields` makes.

    Training decodes only the fields it needs from them (`parse_train_fields`; the pretraining
    clips read their "audio" field the same way): tfds' generic decoding of all eight features
    costs more CPU than reading the record. None (use the decoded records) for any other source:
    in-memory records, custom decoders, or a schema whose `waveforms` are not stored as raw int16
    bytes.
    """
    if isinstance(source, JoinedPairs):  # pairs that name their clips: parsed and joined
        return source.train_records() if tuple(fields) == _TRAIN_FIELDS else None
    raw = getattr(source, "data_source", None)
    info = getattr(source, "dataset_info", None)
    if raw is None or info is None or getattr(source, "decoders", None):
        return None
    method = getattr(source, "deserialize_method", None)
    if method is None or method.name != "DESERIALIZE_AND_DECODE":
        return None
    features = info.features
    if features is None or any(name not in features for name in fields):
        return None
    # Encoding.BYTES tensors are stored as one bytes value (serialised shape ()).
    for name in waveforms:
        serialized = features[name].get_serialized_info()
        if serialized.shape != () or np.dtype(features[name].np_dtype) != np.int16:
            return None
    return raw


def parse_train_fields(record: bytes) -> dict[str, Any]:
    """key, audio1, audio2, captions and caption_tiers of one serialised record, as tfds decodes
    them.

    The waveforms are read-only int16 views of the record (np.frombuffer, as tfds does for
    Encoding.BYTES); key and captions are bytes; caption_tiers is int32 (empty when the dataset
    was built without tiers).
    """
    # tfds ships the tf.train.Example message class; no TensorFlow needed.
    feature = tf_example_pb2.Example.FromString(record).features.feature
    tiers = feature["caption_tiers"].int64_list.value if "caption_tiers" in feature else ()
    return {
        "key": feature["key"].bytes_list.value[0],
        "audio1": np.frombuffer(feature["audio1"].bytes_list.value[0], np.int16),
        "audio2": np.frombuffer(feature["audio2"].bytes_list.value[0], np.int16),
        "captions": list(feature["captions"].bytes_list.value),
        "caption_tiers": np.asarray(tiers, np.int32),
    }


# ---------------------------------------------------------------------------------- training


class _Entries(Sequence):
    """The training examples as a sequence: entry i = (record of pair entries[i, 0], its tier).

    Records are read on access (an array_record data source, its raw records, or a list).
    """

    def __init__(self, source: Sequence[Any], entries: np.ndarray):
        self.source, self.entries = source, np.asarray(entries, np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i):
        record, tier = self.entries[i]
        return self.source[int(record)], int(tier)


class _PrepareTrainExample:
    """(index, (record, tier)) -> one training example; picklable for workers.

    The record is a decoded dict, or a serialised one (`raw_records`) that is parsed here. The
    waveforms stay views of the record (cropped/padded by `_TrainBatch`); only the chosen
    reference caption of the entry's tier is decoded, and its tokens (starting with the tier's
    start token) are cached per (caption, tier). The reference is drawn from
    default_rng([seed, *rng_index]): a different one each epoch, the same on a resumed run.
    """

    def __init__(self, vocab: Vocabulary, n_samples: int, max_tokens: int, seed: int):
        self.vocab, self.n_samples, self.max_tokens, self.seed = vocab, n_samples, max_tokens, seed
        self._tokens: dict[tuple[str, int], np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokens": {}}  # workers build their own cache

    def tokens(self, caption: str, tier: int = 0) -> np.ndarray:
        """[max_tokens] int32: start words <eos>, then <pad> (cached; do not modify)."""
        tokens = self._tokens.get((caption, tier))
        if tokens is None:
            ids, _ = self.vocab.encode(caption, self.max_tokens, self.vocab.start_id(tier))
            tokens = np.full((self.max_tokens,), PAD, np.int32)
            tokens[: len(ids)] = ids
            self._tokens[(caption, tier)] = tokens
        return tokens

    def example(self, rng_index: Sequence[int], entry: tuple[Any, int]) -> dict[str, Any]:
        record, tier = entry
        if isinstance(record, bytes):
            record = parse_train_fields(record)
        tiers = caption_tiers(record)
        captions = [c for c, t in zip(record["captions"], tiers, strict=True) if t == tier]
        rng = np.random.default_rng([self.seed, *rng_index])
        caption = as_text(captions[rng.integers(len(captions))]) if captions else ""
        return {
            "wav1": record["audio1"],
            "wav2": record["audio2"],
            "tokens": self.tokens(caption, tier),
        }

    def __call__(self, index: int, entry: tuple[Any, int]) -> dict[str, Any]:
        return self.example((index,), entry)


class _TrainBatch:
    """Collates prepared examples into a training batch (picklable batch_fn for grain).

    tokens: [b, num_tokens] (default: the examples' full max_tokens).
    """

    def __init__(self, n_samples: int):
        self.n_samples = n_samples

    def __call__(
        self, examples: Sequence[dict[str, Any]], num_tokens: int | None = None
    ) -> dict[str, np.ndarray]:
        wav1, len1 = waveform_batch([e["wav1"] for e in examples], self.n_samples)
        wav2, len2 = waveform_batch([e["wav2"] for e in examples], self.n_samples)
        tokens = np.stack([e["tokens"][:num_tokens] for e in examples])
        return {"wav1": wav1, "wav1_len": len1, "wav2": wav2, "wav2_len": len2, "tokens": tokens}


class BucketPlan(Sequence):
    """Training batches grouped by caption length, so short captions are not padded to long ones.

    Every entry goes to the smallest bucket (a token length) its longest reference fits. Each
    epoch, with default_rng([seed, epoch]): entries are shuffled within their bucket and cut into
    global batches, the entries left over in a bucket (fewer than a batch) move up to the next
    bucket (so every bucket's entries are trained even when it holds less than a batch; only the
    largest bucket's remainder waits for another epoch), and the order of the batches is
    shuffled. The number of batches per epoch depends only on the bucket sizes.

    Element i (of an effectively endless sequence): (epoch, entry indices [global_batch], the
    bucket's token length). Processes take their rows of each global batch.
    """

    EPOCHS = 10**6  # the sequence's length in epochs: endless in practice

    def __init__(
        self, entry_tokens: np.ndarray, buckets: Sequence[int], global_batch: int, seed: int
    ):
        self.buckets = tuple(int(b) for b in buckets)
        tokens = np.minimum(np.asarray(entry_tokens, np.int64), self.buckets[-1])
        self.bucket_of = np.searchsorted(np.asarray(self.buckets), tokens, side="left")
        self.global_batch, self.seed = int(global_batch), int(seed)
        counts = np.bincount(self.bucket_of, minlength=len(self.buckets))
        carry, self.batches_per_epoch = 0, 0
        for count in counts:
            self.batches_per_epoch += (count + carry) // self.global_batch
            carry = (count + carry) % self.global_batch
        if self.batches_per_epoch == 0:
            raise BadData(
                f"The training split has {len(tokens)} examples, fewer than one batch "
                f"({self.global_batch}); lower config.train.batch_size."
            )
        self._cached: tuple[int, list[tuple[np.ndarray, int]]] | None = None

    def __len__(self) -> int:
        return self.batches_per_epoch * self.EPOCHS

    def epoch_batches(self, epoch: int) -> list[tuple[np.ndarray, int]]:
        """[(entry indices [global_batch], token length)] of one epoch, in training order."""
        cached = self._cached  # one read: grain's threads call this concurrently
        if cached is not None and cached[0] == epoch:
            return cached[1]
        rng = np.random.default_rng([self.seed, epoch])
        batches, carry = [], np.zeros((0,), np.int64)
        for b, length in enumerate(self.buckets):
            members = np.concatenate([carry, rng.permutation(np.flatnonzero(self.bucket_of == b))])
            full = len(members) // self.global_batch * self.global_batch
            batches += [(chunk, length) for chunk in members[:full].reshape(-1, self.global_batch)]
            carry = members[full:]
        batches = [batches[i] for i in rng.permutation(len(batches))]
        self._cached = (epoch, batches)
        return batches

    def __getitem__(self, i):
        epoch, position = divmod(int(i), self.batches_per_epoch)
        entries, length = self.epoch_batches(epoch)[position]
        return epoch, entries, length


class _BucketBatch:
    """(index, plan element) -> this process's rows of a bucketed global batch (picklable)."""

    def __init__(
        self,
        entries: _Entries,
        prepare: _PrepareTrainExample,
        collate: _TrainBatch,
        rows: slice,
    ):
        self.entries, self.prepare, self.collate, self.rows = entries, prepare, collate, rows

    def __call__(self, element) -> dict[str, np.ndarray]:
        epoch, entry_indices, length = element
        examples = [
            self.prepare.example((epoch, int(e)), self.entries[int(e)])
            for e in entry_indices[self.rows]
        ]
        return self.collate(examples, length)


def train_dataset(
    source: Sequence[dict[str, Any]],
    vocab: Vocabulary,
    config: ml_collections.ConfigDict,
    *,
    stats: CaptionStats | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
    """The infinite, shuffled, batched training stream of this process (see module docstring).

    Examples are the entries of `stats` (`read_captions` of the split with the run's tiers; read
    here when not given): one per pair, or one per pair and tier for ADIFF. Without token
    buckets, process p reads the entries p, p + P, p + 2P, ... of the first P * floor(n / P)
    (P = process_count), so processes read disjoint rows and the same number of them; each
    yields batches of train.batch_size / P rows. With `data.token_buckets`, batches follow a
    `BucketPlan` and process p takes rows [p * b/P, (p + 1) * b/P) of every global batch; the
    tokens of a batch are as long as its bucket.
    """
    info = getattr(source, "dataset_info", None)
    if info is not None and info.features is not None and "clip1" in info.features:
        raise ValueError(
            "This split's pairs name their clips (a clip store): read it with "
            "clip_store.pair_source(builder, split), not builder.as_data_source(split)."
        )
    global_batch = config.train.batch_size
    local_batch = local_batch_size(config, process_count)
    n_samples = clip_samples(config)
    if stats is None:
        _, stats = read_captions(source, split_tiers(config), vocab.punctuation)
    raw = raw_records(source)
    entries = _Entries(source if raw is None else raw, stats.entries)
    prepare = _PrepareTrainExample(vocab, n_samples, config.data.max_caption_tokens, config.seed)
    collate = _TrainBatch(n_samples)
    buckets = parse_buckets(config.data.token_buckets)
    if buckets:
        plan = BucketPlan(stats.entry_tokens, buckets, global_batch, config.seed % 2**32)
        rows = slice(process_index * local_batch, (process_index + 1) * local_batch)
        ds = grain.MapDataset.source(plan).map(_BucketBatch(entries, prepare, collate, rows))
    else:
        ds = shuffled_shard(
            grain.MapDataset.source(entries), config, process_index, process_count, local_batch
        )
        ds = ds.map_with_index(prepare)
        ds = ds.batch(local_batch, drop_remainder=True, batch_fn=collate)
    return prefetched(ds, config)


def shuffled_shard(
    ds: grain.MapDataset,
    config: ml_collections.ConfigDict,
    process_index: int,
    process_count: int,
    local_batch: int,
    *,
    unit: str = "examples",
    advice: str = "lower config.train.batch_size",
) -> grain.MapDataset:
    """This process's share of the records of `ds`, shuffled (a new permutation every epoch, a
    function of config.seed alone) and repeated without end.

    Process p reads the records p, p + P, p + 2P, ... of the first P * floor(n / P) (P =
    process_count), so processes read disjoint records and as many each.

    Raises:
      ValueError: the share is smaller than one batch (`local_batch`); the message counts the
        split's records in `unit` and ends with `advice`.
    """
    usable = len(ds) // process_count * process_count
    shard = ds[:usable][process_index::process_count]
    if len(shard) < local_batch:
        raise BadData(
            f"The training split has {len(ds)} {unit}, fewer than one batch per "
            f"process ({local_batch}); {advice}."
        )
    return shard.shuffle(seed=config.seed % 2**32).repeat()


def prefetched(ds: grain.MapDataset, config: ml_collections.ConfigDict) -> grain.IterDataset:
    """`ds` as an iterator dataset read ahead by a few threads (data.prefetch batches) and, with
    data.num_workers > 0, by that many worker processes."""
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


# How `eval_batches` arranges a pair's clips (see there).
EVAL_CLIPS = ("stored", "swapped", "identical")


def eval_batches(
    split: EvalSplit,
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    vocab: Vocabulary | None = None,
    process_index: int = 0,
    process_count: int = 1,
    clips: str = "stored",
) -> Iterator[dict[str, np.ndarray]]:
    """Batches over the split in order; rows past the end repeat the last entry with valid=False.

    Process p takes rows [p * b/P, (p + 1) * b/P) of every global batch of b = batch_size rows.
    Every batch holds "start" [b] int32, each row's first decoder token (<bos>, or the tier's
    token from `vocab`, which tiered splits need). `clips` (one of EVAL_CLIPS) arranges each
    pair's clips: "stored" (clip 1, clip 2), "swapped" (clip 2, clip 1) or "identical"
    (clip 1, clip 1), the arrangements of the diagnostics (`adc_jax.metrics.diagnostics`).
    """
    if clips not in EVAL_CLIPS:
        raise ValueError(f"clips={clips!r} must be one of {EVAL_CLIPS}.")
    if batch_size % process_count:
        raise ValueError(
            f"The eval batch size {batch_size} must be divisible by the number of processes "
            f"({process_count})."
        )
    if vocab is None and any(split.tiers):
        raise ValueError("A tiered split needs the run's vocabulary for its start tokens.")
    start_of = {t: vocab.start_id(t) if vocab is not None else BOS for t in set(split.tiers)}
    n_samples = clip_samples(config)
    n = len(split.keys)
    local = batch_size // process_count
    for first in range(0, n, batch_size):
        rows = np.arange(first + process_index * local, first + (process_index + 1) * local)
        index = np.minimum(rows, n - 1)
        records = [split.source[split.records[int(i)]] for i in index]
        wav1, len1 = waveform_batch([r["audio1"] for r in records], n_samples)
        if clips == "identical":
            wav2, len2 = wav1, len1
        else:
            wav2, len2 = waveform_batch([r["audio2"] for r in records], n_samples)
        if clips == "swapped":
            wav1, len1, wav2, len2 = wav2, len2, wav1, len1
        yield {
            "wav1": wav1,
            "wav2": wav2,
            "wav1_len": len1,
            "wav2_len": len2,
            "start": np.asarray([start_of[split.tiers[int(i)]] for i in index], np.int32),
            "valid": rows < n,
            "index": index.astype(np.int64),
        }
