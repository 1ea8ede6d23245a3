"""Tests of adc_jax.data.vocab: reading a split's captions, the run's vocabulary and the tiers.

Captions: training entries are one per pair and selected tier with references, each with the
tokens of its longest reference. Vocabulary: built from the training captions or loaded from the
workdir, both logging how many captions it truncates or maps to <unk>; a workdir's vocabulary
made for other data settings is refused. Tiers: ADIFF runs get their tiers' start tokens and
per-tier keys; every other dataset is tier 0.
"""

from __future__ import annotations

import collections
import logging as std_logging

import pytest
from tiered_records import answers_of, tiered_config, tiered_records

from adc_jax import config as config_lib
from adc_jax.data import vocab as vocab_lib
from adc_jax.data.tokenizer import Vocabulary, tier_token, words


@pytest.fixture(scope="module")
def records():
    return tiered_records()


def test_entries_are_one_per_pair_and_tier_with_references(records):
    _, stats = vocab_lib.read_captions(records, (1, 3), punctuation=True)
    tiers = collections.Counter(stats.entries[:, 1].tolist())
    assert tiers == {1: 40, 3: 32}
    assert len(stats.by_tier[1]) == 80 and len(stats.by_tier[3]) == 32
    for (record, tier), tokens in zip(stats.entries, stats.entry_tokens, strict=True):
        longest = max(len(words(a, True)) for a in answers_of(records[record], tier))
        assert tokens == longest + 2
    _, only_one = vocab_lib.read_captions(records, (1,), punctuation=True)
    assert set(only_one.entries[:, 1].tolist()) == {1} and only_one.num_captions == 80


def test_vocabulary_logs_truncated_and_unknown_counts_when_built_and_loaded(tmp_path, caplog):
    captions = ["add a dog", "add a dog and a cat and a bird and a cow", "remove a dog"]
    path = str(tmp_path / "vocab.json")
    for _ in range(2):  # built, then loaded
        caplog.clear()
        with caplog.at_level(std_logging.INFO):
            vocab = vocab_lib.build_or_load_vocab(path, captions, min_count=2, max_tokens=6)
        assert "1 of 3 longer than 6 tokens will be truncated" in caplog.text
        # min_count=2 keeps "a", "and", "dog", "add": cat, bird, cow, remove -> <unk>.
        assert "2 hold 4 word(s) outside the vocabulary" in caplog.text
    assert vocab.tokens[4:] == ["a", "and", "dog", "add"]


def test_a_vocabulary_of_other_data_settings_is_refused(tmp_path):
    path = str(tmp_path / "vocab.json")
    Vocabulary.build(["add a dog."], punctuation=True, extra_tokens=[tier_token(1)]).save(path)
    vocab = vocab_lib.check_vocab_file(path, punctuation=True, extra_tokens=[tier_token(1)])
    assert vocab.index[tier_token(1)] == 4
    with pytest.raises(ValueError, match=r"missing tokens \['<tier3>'\]"):
        vocab_lib.check_vocab_file(path, punctuation=True, extra_tokens=[tier_token(3)])
    with pytest.raises(ValueError, match="punctuation tokens True"):
        vocab_lib.build_or_load_vocab(path, [], 1, 8, punctuation=False)


def test_tiers_of_a_run():
    config = tiered_config()
    assert vocab_lib.split_tiers(config) == (1, 3)
    assert vocab_lib.tier_tokens(config) == ["<tier1>", "<tier3>"]
    assert vocab_lib.tier_key("k", 3) == "k@tier3" and vocab_lib.tier_key("k", 0) == "k"
    smoke = config_lib.base_config("smoke")  # synthetic_adc: untiered
    assert vocab_lib.split_tiers(smoke) == (0,) and vocab_lib.tier_tokens(smoke) == []
    config.data.adiff_tiers = "1,x"
    with pytest.raises(ValueError, match="data.adiff_tiers='1,x' is not a tier list"):
        vocab_lib.split_tiers(config)
