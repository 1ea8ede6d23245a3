"""The captions of a split, the run's vocabulary and the caption tiers.

Reading captions (`read_captions`): every reference of the selected tiers, pair by pair, with the
training entries (one per pair, or one per pair and tier for ADIFF) and their token lengths,
counted and logged (`CaptionStats`). A split's text fields come from its caption file
(`split_captions`; `adc_jax.data.caption_file`), so start-up reads no audio; a build made
before that file existed is read record by record. The vocabulary of a run is built from the
training captions and saved in its workdir, or loaded from there and checked against the config
(`build_or_load_vocab`, `check_vocab_file`), logging how many captions it truncates or maps to
<unk> (`token_stats`). The word-level `Vocabulary` itself is `adc_jax.data.tokenizer` (pure
Python, for the model code).

Tiers: ADIFF's captions come in three levels of detail (`features.caption_tiers`); a run picks
some (`split_tiers`, `data.adiff_tiers`), gets one start token per tier in its vocabulary
(`tier_tokens`) and keys its predictions per tier (`tier_key`). Every other dataset is
untiered: tier 0, started by <bos>.

Public API:
  split_tiers(config), tier_tokens(config), tier_key(key, tier)
  tier_captions(record, tier)           the captions of one tier of a record.
  split_captions(builder, split)        the text fields of a split's records, without audio.
  read_captions(source, tiers, punctuation) -> (per pair captions, CaptionStats)
  token_stats(vocab, captions, max_tokens) -> TokenStats
  check_vocab_file(path, ...), build_or_load_vocab(path, captions, ...) -> Vocabulary
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from adc_jax.config import parse_tiers
from adc_jax.data import caption_file
from adc_jax.data.errors import BadData
from adc_jax.data.features import as_text, caption_tiers
from adc_jax.data.tokenizer import UNK, Vocabulary, tier_token, words

# ------------------------------------------------------------------------------------- tiers


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


def tier_key(key: str, tier: int) -> str:
    """The key of a pair's entry of `tier` in predictions and results ("<key>" for tier 0)."""
    return key if not tier else f"{key}@tier{tier}"


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


def tier_captions(record: dict[str, Any], tier: int) -> list[str]:
    """The captions of `record` whose tier is `tier` (all captions of an untiered record)."""
    tiers = caption_tiers(record)
    return [as_text(c) for c, t in zip(record["captions"], tiers, strict=True) if t == tier]


@functools.cache
def _log_no_caption_file(data_dir: str) -> None:
    """Says once per dataset that its captions are read from the records."""
    logging.info(
        "%s was built before datasets had caption files, so its captions and keys are read "
        "from its records (with their audio where the pairs hold it); rebuilding it (delete "
        "the folder, or build it again elsewhere and copy it) makes this part of start-up "
        "instant.",
        data_dir,
    )


def split_captions(builder: Any, split: str) -> Sequence[dict[str, Any]]:
    """The text fields of every record of `split`, in record order, without reading audio.

    From the split's caption file (`caption_file`): one dict per record with key, captions,
    caption_tiers, scene, edit_ops and edit_classes. A build without that file (made before it
    existed) gives the split's records instead (`builder.as_data_source(split)`: with their
    audio where the pairs hold it, without where they name clips; logged once); nothing is
    written into an existing build.

    Args:
      builder: a prepared tfds builder of a pair schema (`registry.load_builder`).
      split: the split's name.

    Raises:
      BadData: the caption file does not hold one entry per record of the split.
    """
    records = caption_file.read(builder.data_dir, split)
    if records is None:
        _log_no_caption_file(str(builder.data_dir))
        return builder.as_data_source(split)
    expected = builder.info.splits[split].num_examples
    if len(records) != expected:
        raise BadData(
            f"{caption_file.file_path(builder.data_dir, split)} holds {len(records)} entries, but "
            f"the {split} split has {expected} records: the dataset folder was changed after "
            "its build. Delete the folder to rebuild it."
        )
    return records


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
            selected = tier_captions(record, tier)
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
