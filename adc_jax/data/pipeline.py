"""Input pipelines: tfds `array_record` data sources -> grain -> NumPy batches.

Host work is only indexing records, picking a reference caption, tokenising and padding/cropping
int16 waveforms; the log-mel runs on the device inside the jitted step.

Training (`train_dataset`): per-process shard -> seeded shuffle (a new order every epoch) ->
repeat -> a random reference caption per pair per epoch -> tokens and fixed-length int16 audio ->
batches of batch_size / process_count with drop_remainder -> optional worker processes. The grain
iterator's state is saved with every checkpoint, so a resumed run sees the same data order.

Evaluation (`eval_batches`): the split in its stored order, every reference kept, the last batch
padded (rows marked invalid), each process taking its rows of every global batch.

Batch fields (NumPy, this process's rows):
  wav1, wav2 [b, N] int16; wav1_len, wav2_len [b] int32; tokens [b, L] int32 (training);
  eval batches add valid [b] bool and index [b] int64 (position in the split).
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

from adc_jax.data.features import as_text
from adc_jax.data.tokenizer import PAD, Vocabulary, words


def data_dir(config: ml_collections.ConfigDict) -> str:
    from adc_jax.config import default_data_dir
    return os.path.expanduser(config.data.data_dir or default_data_dir())


def load_builder(config: ml_collections.ConfigDict):
    """The prepared tfds builder of `config.data` (built on first use)."""
    d = config.data
    if d.name == "synthetic_adc":
        from adc_jax.data.synthetic import build_synthetic
        return build_synthetic(data_dir(config), num_train=d.num_train,
                               num_validation=d.num_validation, num_eval=d.num_eval,
                               clip_seconds=d.clip_seconds, seed=d.synth_seed,
                               sample_rate=d.sample_rate)
    if d.name == "audio_diff_caps":
        from adc_jax.data.audiodiffcaps import build_audio_diff_caps
        return build_audio_diff_caps(data_dir(config), audio_dir=os.path.expanduser(d.audio_dir),
                                     csv_dir=os.path.expanduser(d.csv_dir),
                                     validation_fraction=d.validation_fraction,
                                     sample_rate=d.sample_rate)
    raise ValueError(f"config.data.name={d.name!r} is not a known dataset.")


def clip_samples(config: ml_collections.ConfigDict) -> int:
    return int(round(config.data.clip_seconds * config.data.sample_rate))


def fit_int16(wav: np.ndarray, n_samples: int) -> tuple[np.ndarray, int]:
    """Crops the end or zero-pads an int16 waveform to n_samples; returns it and its valid length."""
    wav = np.asarray(wav, np.int16).reshape(-1)
    if wav.shape[0] >= n_samples:
        return wav[:n_samples], n_samples
    out = np.zeros((n_samples,), np.int16)
    out[: wav.shape[0]] = wav
    return out, int(wav.shape[0])


# ---------------------------------------------------------------------------------- captions


@dataclasses.dataclass
class CaptionStats:
    """What the training captions look like; logged at start so nothing changes silently."""

    num_pairs: int
    num_captions: int
    captions: list[str]
    pairs_without_captions: int


def read_captions(source: Sequence[dict[str, Any]]) -> tuple[list[list[str]], CaptionStats]:
    """All reference captions of a split, per pair, in stored order."""
    per_pair = [[as_text(c) for c in source[i]["captions"]] for i in range(len(source))]
    flat = [c for cs in per_pair for c in cs]
    empty = sum(1 for cs in per_pair if not cs)
    return per_pair, CaptionStats(len(per_pair), len(flat), flat, empty)


def build_or_load_vocab(path: str, captions: Sequence[str], min_count: int,
                        max_tokens: int) -> Vocabulary:
    """Loads the run's vocabulary, or builds it from the training captions and saves it."""
    if os.path.exists(path):
        vocab = Vocabulary.load(path)
        logging.info("Vocabulary: %d tokens from %s", len(vocab), path)
        return vocab
    vocab = Vocabulary.build(captions, min_count=min_count)
    vocab.save(path)
    lengths = [len(words(c)) + 2 for c in captions]
    too_long = sum(n > max_tokens for n in lengths)
    logging.info("Vocabulary: %d tokens built from %d training captions, saved to %s; %d captions "
                 "longer than %d tokens will be truncated.", len(vocab), len(captions), path,
                 too_long, max_tokens)
    return vocab


# ---------------------------------------------------------------------------------- training


class _PrepareTrainExample:
    """(index in the repeated dataset, record) -> one training example; picklable for workers."""

    def __init__(self, vocab: Vocabulary, n_samples: int, max_tokens: int, seed: int):
        self.vocab, self.n_samples, self.max_tokens, self.seed = vocab, n_samples, max_tokens, seed

    def __call__(self, index: int, record: dict[str, Any]) -> dict[str, np.ndarray]:
        captions = [as_text(c) for c in record["captions"]]
        # A different reference each epoch, the same one on a resumed run.
        rng = np.random.default_rng([self.seed, index])
        caption = captions[rng.integers(len(captions))] if captions else ""
        ids, _ = self.vocab.encode(caption, self.max_tokens)
        tokens = np.full((self.max_tokens,), PAD, np.int32)
        tokens[: len(ids)] = ids
        wav1, len1 = fit_int16(record["audio1"], self.n_samples)
        wav2, len2 = fit_int16(record["audio2"], self.n_samples)
        return {"wav1": wav1, "wav1_len": np.int32(len1), "wav2": wav2,
                "wav2_len": np.int32(len2), "tokens": tokens}


def train_dataset(source: Sequence[dict[str, Any]], vocab: Vocabulary,
                  config: ml_collections.ConfigDict, *, process_index: int = 0,
                  process_count: int = 1) -> grain.IterDataset:
    """The infinite, shuffled, batched training stream of this process (see module docstring)."""
    global_batch = config.train.batch_size
    if global_batch % process_count:
        raise ValueError(f"config.train.batch_size={global_batch} must be divisible by the "
                         f"number of processes ({process_count}).")
    local_batch = global_batch // process_count
    ds = grain.MapDataset.source(source)
    usable = len(ds) // process_count * process_count
    ds = ds[:usable][process_index::process_count]
    if len(ds) < local_batch:
        raise ValueError(f"The training split has {len(source)} pairs, fewer than one batch per "
                         f"process ({local_batch}); lower config.train.batch_size.")
    ds = ds.shuffle(seed=config.seed % 2**32).repeat()
    ds = ds.map_with_index(_PrepareTrainExample(vocab, clip_samples(config),
                                                config.data.max_caption_tokens, config.seed))
    ds = ds.batch(local_batch, drop_remainder=True)
    # Batches are prepared by a few threads ahead of the training loop (prefetch = batches).
    prefetch = config.data.prefetch
    iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=min(4, prefetch) if prefetch else 0,
                                                   prefetch_buffer_size=prefetch))
    if config.data.num_workers > 0:
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=config.data.num_workers, per_worker_buffer_size=max(prefetch, 1)))
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
    """Reads the metadata of (the first max_examples pairs of) a split."""
    n = len(source) if not max_examples else min(max_examples, len(source))
    keys, refs, edits, scenes = [], [], [], []
    seen: collections.Counter[str] = collections.Counter()
    for i in range(n):
        r = source[i]
        key = as_text(r["key"])
        seen[key] += 1
        keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
        refs.append([as_text(c) for c in r["captions"]])
        edits.append([(as_text(o), as_text(c))
                      for o, c in zip(r["edit_ops"], r["edit_classes"], strict=True)])
        scenes.append(as_text(r["scene"]))
    return EvalSplit(source, keys, refs, edits, scenes)


def eval_batches(split: EvalSplit, config: ml_collections.ConfigDict, *, batch_size: int,
                 process_index: int = 0, process_count: int = 1
                 ) -> Iterator[dict[str, np.ndarray]]:
    """Batches over the split in order; rows past the end repeat the last pair with valid=False."""
    n_samples = clip_samples(config)
    n = len(split.keys)
    local = batch_size // process_count
    for start in range(0, n, batch_size):
        rows = range(start + process_index * local, start + (process_index + 1) * local)
        batch = collections.defaultdict(list)
        for i in rows:
            r = split.source[min(i, n - 1)]
            wav1, len1 = fit_int16(r["audio1"], n_samples)
            wav2, len2 = fit_int16(r["audio2"], n_samples)
            batch["wav1"].append(wav1)
            batch["wav2"].append(wav2)
            batch["wav1_len"].append(len1)
            batch["wav2_len"].append(len2)
            batch["valid"].append(i < n)
            batch["index"].append(min(i, n - 1))
        yield {"wav1": np.stack(batch["wav1"]), "wav2": np.stack(batch["wav2"]),
               "wav1_len": np.asarray(batch["wav1_len"], np.int32),
               "wav2_len": np.asarray(batch["wav2_len"], np.int32),
               "valid": np.asarray(batch["valid"], bool),
               "index": np.asarray(batch["index"], np.int64)}
