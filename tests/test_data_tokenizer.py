"""Tests of the word-level vocabulary."""

from __future__ import annotations

import json

import pytest

from adc_jax.data.tokenizer import (
    BOS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    Vocabulary,
    tier_token,
    words,
)

CAPTIONS = [
    "The rain is heavier in the second clip.",
    "A car passes by in the second one, the rain stays the same!",
    "The second clip has more traffic noise.",
]


@pytest.fixture
def vocab():
    return Vocabulary.build(CAPTIONS)


def test_special_tokens_come_first(vocab):
    assert vocab.tokens[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert [vocab.index[t] for t in SPECIAL_TOKENS] == [PAD, BOS, EOS, UNK]


def test_words_lowercase_and_drop_punctuation():
    assert words("The car's horn, LOUDER!") == ["the", "car's", "horn", "louder"]


def test_build_orders_by_frequency_and_applies_min_count():
    vocab = Vocabulary.build(CAPTIONS, min_count=3)
    # "the" (6x) and "second" (3x) are kept; "clip" (2x) is not.
    assert vocab.tokens[4:] == ["the", "second"]
    vocab = Vocabulary.build(CAPTIONS)
    all_words = {w for c in CAPTIONS for w in words(c)}
    assert set(vocab.tokens[4:]) == all_words and len(vocab) == 4 + len(all_words)
    assert vocab.tokens[4] == "the"


def test_encode_decode_round_trip(vocab):
    for caption in CAPTIONS:
        ids, truncated = vocab.encode(caption, max_tokens=32)
        assert not truncated
        assert ids[0] == BOS and ids[-1] == EOS and UNK not in ids
        assert len(ids) == len(words(caption)) + 2
        assert vocab.decode(ids) == " ".join(words(caption))
    # Decoding stops at <eos> and skips padding.
    ids, _ = vocab.encode(CAPTIONS[0], max_tokens=32)
    assert vocab.decode(ids + [PAD, PAD, 5, 6]) == vocab.decode(ids)


def test_unknown_words_become_unk(vocab):
    ids, _ = vocab.encode("the helicopter is louder", max_tokens=32)
    assert ids == [BOS, vocab.index["the"], UNK, vocab.index["is"], UNK, EOS]
    assert vocab.decode(ids) == "the <unk> is <unk>"
    assert vocab.decode([BOS, len(vocab) + 5, EOS]) == "<unk>"  # an id outside the vocabulary


def test_truncation_keeps_bos_and_eos(vocab):
    ids, truncated = vocab.encode(CAPTIONS[1], max_tokens=5)
    assert truncated
    assert len(ids) == 5 and ids[0] == BOS and ids[-1] == EOS
    assert vocab.decode(ids) == " ".join(words(CAPTIONS[1])[:3])
    # Exactly at the limit is not truncation.
    n = len(words(CAPTIONS[0])) + 2
    assert vocab.encode(CAPTIONS[0], max_tokens=n) == (vocab.encode(CAPTIONS[0], 32)[0], False)


def test_save_and_load(vocab, tmp_path):
    path = str(tmp_path / "vocab.json")
    vocab.save(path)
    loaded = Vocabulary.load(path)
    assert loaded.tokens == vocab.tokens
    assert loaded.encode(CAPTIONS[2], 32) == vocab.encode(CAPTIONS[2], 32)
    assert not (tmp_path / "vocab.json.tmp").exists()
    assert json.loads((tmp_path / "vocab.json").read_text())["tokens"][:4] == list(SPECIAL_TOKENS)


def test_invalid_vocabularies_are_rejected():
    with pytest.raises(ValueError, match="start with"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary([*SPECIAL_TOKENS, "rain", "rain"])


def test_punctuation_tokens_and_unicode_words():
    text = "The dog's bark is louder, and Café noise stops. Then: silence!"
    assert words(text, punctuation=True) == [
        "the", "dog's", "bark", "is", "louder", ",", "and", "café", "noise", "stops", ".",
        "then", ":", "silence", "!",
    ]  # fmt: skip
    vocab = Vocabulary.build([text], punctuation=True)
    ids, _ = vocab.encode(text, 64)
    assert vocab.decode(ids) == "the dog's bark is louder, and café noise stops. then: silence!"
    # The default vocabulary drops punctuation, as runs on the built-in data always have.
    assert "," not in Vocabulary.build([text]).index


def test_tier_tokens_start_captions(tmp_path):
    vocab = Vocabulary.build(
        ["louder", "much louder"], extra_tokens=[tier_token(1), tier_token(3)], punctuation=True
    )
    assert vocab.tokens[4:6] == ["<tier1>", "<tier3>"]
    assert vocab.start_id(0) == BOS
    ids, _ = vocab.encode("much louder", 8, start=vocab.start_id(3))
    assert ids[0] == vocab.index["<tier3>"] and vocab.decode(ids[1:]) == "much louder"
    with pytest.raises(ValueError, match="not trained on tier 2.*<tier1>, <tier3>"):
        vocab.start_id(2)
    # A caption cannot spell a tier token: "<" is not a word character.
    assert vocab.encode("<tier1> louder", 8)[0][1:-1] == [UNK, vocab.index["louder"]]
    vocab.save(str(tmp_path / "v.json"))
    loaded = Vocabulary.load(str(tmp_path / "v.json"))
    assert loaded.punctuation and loaded.tokens == vocab.tokens


def test_vocabulary_files_without_the_punctuation_field_load_as_before(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"tokens": [*SPECIAL_TOKENS, "dog"]}))
    assert Vocabulary.load(str(path)).punctuation is False
