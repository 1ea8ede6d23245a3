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

from adc_jax.config import default_data_dir, parse_buckets, parse_tiers
from adc_jax.data.adiff import build_adiff
from adc_jax.data.audiodiffcaps import build_audio_diff_caps
from adc_jax.data.clip_pairs import ClipPairsSpec, build_clip_pairs
from adc_jax.data.features import as_text, caption_tiers
from adc_jax.data.synthetic.builder import SyntheticSpec, build_synthetic
from adc_jax.data.tokenizer import BOS, PAD, UNK, Vocabulary, tier_token, words
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
            min_clip_fraction=d.min_clip_fraction,
        )
    if d.name == "clip_pairs":
        return build_clip_pairs(data_dir(config), ClipPairsSpec.from_config(d))
    if d.name == "adiff":
        return build_adiff(
            data_dir(config),
            csv_dir=os.path.expanduser(d.csv_dir),
            audio_dir=os.path.expanduser(d.audio_dir),
            subset=d.adiff_subset,
            clip_seconds=float(d.clip_seconds),
            sample_rate=d.sample_rate,
            min_clip_fraction=d.min_clip_fraction,
        )
    raise ValueError(f"config.data.name={d.name!r} is not a known dataset.")


def split_tiers(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """The caption tiers a run trains and scores on: ADIFF's `data.adiff_tiers`, else (0,)."""
    if config.data.name == "adiff":
        tiers = parse_tiers(config.data.adiff_tiers)
        if tiers is None:
            raise ValueError(f"data.adiff_tiers={config.data.adiff_tiers!r} is not a tier list.")
        return tiers
    return (0,)


def tier_tokens(config: ml_collections.ConfigDict) -> list[str]:
    """The extra vocabulary tokens of a run: one start token per tier when trained on tiers."""
    tiers = split_tiers(config)
    return [] if tiers == (0,) else [tier_token(t) for t in tiers]


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

# The fields training reads from a record (and caption_tiers where the dataset has it).
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


# ---------------------------------------------------------------------------------- captions


@dataclasses.dataclass
class CaptionStats:
    """What the training captions look like; logged at start so nothing changes silently.

    Attributes:
      num_pairs: pairs in the split.
      num_captions: reference captions of the selected tiers over all pairs.
      captions: every reference caption of the selected tiers, pair by pair, in stored order.
      pairs_without_captions: pairs with no reference (trained towards the empty caption).
      keys_without_captions: the keys of those pairs (at most 20).
      entries: [n, 2] int64 (record index, tier) of every training example: one per pair and
        selected tier that has references (untiered data: (i, 0) for every pair i).
      entry_tokens: [n] int32 tokens of each entry's longest reference (<bos>/<eos> included),
        tokenised as `punctuation` says; what length bucketing sorts by.
      by_tier: tier -> its captions (for the per-tier most-frequent baseline).
    """

    num_pairs: int
    num_captions: int
    captions: list[str]
    pairs_without_captions: int
    keys_without_captions: list[str] = dataclasses.field(default_factory=list)
    entries: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2), np.int64))
    entry_tokens: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.int32))
    by_tier: dict[int, list[str]] = dataclasses.field(default_factory=dict)


def _tier_captions(record: dict[str, Any], tier: int) -> list[str]:
    """The captions of `record` whose tier is `tier` (all captions of an untiered record)."""
    tiers = caption_tiers(record)
    return [as_text(c) for c, t in zip(record["captions"], tiers, strict=True) if t == tier]


def read_captions(
    source: Sequence[dict[str, Any]], tiers: Sequence[int] = (0,), punctuation: bool = False
) -> tuple[list[list[str]], CaptionStats]:
    """The reference captions of the selected tiers of a split, per pair in stored order, and
    their counts and training entries (logged).

    Args:
      source: the split's records.
      tiers: the tiers to keep ((0,) for untiered data; ADIFF: `split_tiers(config)`).
      punctuation: tokenise as a vocabulary with punctuation tokens does (for entry_tokens).
    """
    tiers = tuple(tiers)
    per_pair, empty_keys, entries, entry_tokens = [], [], [], []
    by_tier: dict[int, list[str]] = {t: [] for t in tiers}
    for i in range(len(source)):
        record = source[i]
        captions = []
        for tier in tiers:
            selected = _tier_captions(record, tier)
            if selected or tier == 0:  # untiered pairs without captions still train
                entries.append((i, tier))
                entry_tokens.append(max((len(words(c, punctuation)) for c in selected), default=0))
            by_tier[tier].extend(selected)
            captions.extend(selected)
        if not captions:
            empty_keys.append(as_text(record["key"]))
        per_pair.append(captions)
    flat = [c for cs in per_pair for c in cs]
    stats = CaptionStats(
        len(per_pair),
        len(flat),
        flat,
        len(empty_keys),
        empty_keys[:20],
        np.asarray(entries, np.int64).reshape(-1, 2),
        np.asarray(entry_tokens, np.int32) + 2,
        by_tier,
    )
    logging.info("Read %d captions of %d pairs.", stats.num_captions, stats.num_pairs)
    if tiers != (0,):
        logging.info(
            "Tiers: %s.",
            ", ".join(
                f"tier {t}: {int((stats.entries[:, 1] == t).sum())} pairs, "
                f"{len(by_tier[t])} captions"
                for t in tiers
            ),
        )
    if empty_keys:
        logging.warning(
            "%d pair(s) have no reference caption%s; first keys: %s.",
            len(empty_keys),
            " and are trained towards the empty caption [<bos>, <eos>]"
            if tiers == (0,)
            else " of the selected tiers and are left out of training",
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
        unknown = sum(vocab.index.get(w, UNK) == UNK for w in vocab.words(caption))
        with_unknown += unknown > 0
        unknown_words += unknown
    return TokenStats(len(captions), truncated, with_unknown, unknown_words)


def check_vocab_file(
    path: str, *, punctuation: bool, extra_tokens: Sequence[str] = ()
) -> Vocabulary:
    """Loads a workdir's vocabulary and checks it fits the config's data settings.

    Every process calls this before the processes wait for each other, so a mismatch fails
    everywhere with the message instead of leaving the other processes at a barrier.

    Raises:
      ValueError: the vocabulary lacks one of `extra_tokens` (tier tokens) or has another
        punctuation setting.
    """
    vocab = Vocabulary.load(path)
    missing = [t for t in extra_tokens if t not in vocab.index]
    if missing or vocab.punctuation != punctuation:
        raise ValueError(
            f"The vocabulary {path} was built for other data settings (punctuation tokens "
            f"{vocab.punctuation}, missing tokens {missing}); this config asks for "
            f"punctuation tokens {punctuation} and {list(extra_tokens)}. Use a new workdir "
            "or the data settings this workdir was trained with."
        )
    return vocab


def build_or_load_vocab(
    path: str,
    captions: Sequence[str],
    min_count: int,
    max_tokens: int,
    *,
    punctuation: bool = False,
    extra_tokens: Sequence[str] = (),
) -> Vocabulary:
    """Loads the run's vocabulary, or builds it from the training captions and saves it.

    Either way, logs how many training captions will be truncated to max_tokens and how many
    hold words that become <unk>.

    Raises:
      ValueError: a loaded vocabulary lacks one of `extra_tokens` or has another punctuation
        setting (the workdir was trained with other data settings; `check_vocab_file`).
    """
    if os.path.exists(path):
        vocab = check_vocab_file(path, punctuation=punctuation, extra_tokens=extra_tokens)
        logging.info("Vocabulary: %d tokens from %s.", len(vocab), path)
    else:
        vocab = Vocabulary.build(
            captions, min_count=min_count, punctuation=punctuation, extra_tokens=extra_tokens
        )
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
        wav1, len1 = _waveform_batch([e["wav1"] for e in examples], self.n_samples)
        wav2, len2 = _waveform_batch([e["wav2"] for e in examples], self.n_samples)
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
            raise ValueError(
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
    global_batch = config.train.batch_size
    if global_batch % process_count:
        raise ValueError(
            f"config.train.batch_size={global_batch} must be divisible by the "
            f"number of processes ({process_count})."
        )
    local_batch = global_batch // process_count
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
        ds = grain.MapDataset.source(entries)
        usable = len(ds) // process_count * process_count
        ds = ds[:usable][process_index::process_count]
        if len(ds) < local_batch:
            raise ValueError(
                f"The training split has {len(entries)} examples, fewer than one batch per "
                f"process ({local_batch}); lower config.train.batch_size."
            )
        ds = ds.shuffle(seed=config.seed % 2**32).repeat()
        ds = ds.map_with_index(prepare)
        ds = ds.batch(local_batch, drop_remainder=True, batch_fn=collate)
    return prefetched(ds, config)


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


@dataclasses.dataclass
class EvalSplit:
    """A split loaded for evaluation: one entry per pair (and tier, for tiered data), in stored
    order (tier by tier), with keys, references and labels.

    records[i] is the source record of entry i and tiers[i] its tier (0 for untiered data).
    """

    source: Sequence[dict[str, Any]]
    keys: list[str]
    references: list[list[str]]
    edits: list[list[tuple[str, str]]]
    scenes: list[str]
    records: list[int] = dataclasses.field(default_factory=list)
    tiers: list[int] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if not self.records:
            self.records = list(range(len(self.keys)))
        if not self.tiers:
            self.tiers = [0] * len(self.keys)

    def subset(self, indices: Sequence[int]) -> EvalSplit:
        """The entries `indices` of this split, as a split of their own (e.g. one tier)."""
        pick = lambda xs: [xs[int(i)] for i in indices]  # noqa: E731
        return EvalSplit(
            self.source,
            pick(self.keys),
            pick(self.references),
            pick(self.edits),
            pick(self.scenes),
            pick(self.records),
            pick(self.tiers),
        )

    def by_tier(self) -> dict[int, EvalSplit]:
        """tier -> the split's entries of that tier."""
        return {
            t: self.subset([i for i, u in enumerate(self.tiers) if u == t])
            for t in sorted(set(self.tiers))
        }


def tier_key(key: str, tier: int) -> str:
    """The key of a pair's entry of `tier` in predictions and results ("<key>" for tier 0)."""
    return key if not tier else f"{key}@tier{tier}"


def load_eval_split(
    source: Sequence[dict[str, Any]], max_examples: int = 0, tiers: Sequence[int] = (0,)
) -> EvalSplit:
    """Reads the metadata of (the first max_examples pairs of) a split.

    With tiers other than (0,) (ADIFF), every pair gives one entry per tier it has references
    of, tier by tier, keyed `tier_key(key, tier)`. A key that repeats gets "#2", "#3", ...
    appended so predictions stay one per entry.
    """
    n = len(source) if not max_examples else min(max_examples, len(source))
    keys, refs, edits, scenes, records, entry_tiers = [], [], [], [], [], []
    seen: collections.Counter[str] = collections.Counter()
    # Only the text fields are kept: a decoded record's waveforms are views of its bytes, and a
    # split's audio (gigabytes for ADIFF) must not stay in memory.
    text_fields = ("key", "captions", "caption_tiers", "edit_ops", "edit_classes", "scene")
    metadata = []
    for i in range(n):
        record = source[i]
        metadata.append({f: record[f] for f in text_fields if f in record})
    for tier in tiers:
        for i, r in enumerate(metadata):
            captions = _tier_captions(r, tier)
            if tier and not captions:
                continue  # this pair has no reference of this tier
            key = tier_key(as_text(r["key"]), tier)
            seen[key] += 1
            keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
            refs.append(captions)
            edits.append(
                [
                    (as_text(o), as_text(c))
                    for o, c in zip(r["edit_ops"], r["edit_classes"], strict=True)
                ]
            )
            scenes.append(as_text(r["scene"]))
            records.append(i)
            entry_tiers.append(int(tier))
    return EvalSplit(source, keys, refs, edits, scenes, records, entry_tiers)


def eval_batches(
    split: EvalSplit,
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    vocab: Vocabulary | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Batches over the split in order; rows past the end repeat the last entry with valid=False.

    Process p takes rows [p * b/P, (p + 1) * b/P) of every global batch of b = batch_size rows.
    Every batch holds "start" [b] int32, each row's first decoder token (<bos>, or the tier's
    token from `vocab`, which tiered splits need).
    """
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
        wav1, len1 = _waveform_batch([r["audio1"] for r in records], n_samples)
        wav2, len2 = _waveform_batch([r["audio2"] for r in records], n_samples)
        yield {
            "wav1": wav1,
            "wav2": wav2,
            "wav1_len": len1,
            "wav2_len": len2,
            "start": np.asarray([start_of[split.tiers[int(i)]] for i in index], np.int32),
            "valid": rows < n,
            "index": index.astype(np.int64),
        }
