"""Tests of the caption grammar and parser (adc_jax/data/synthetic/grammar.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from adc_jax.data.synthetic import grammar as C


def test_parser_reads_every_single_edit_reference():
    for edit, texts in C.all_single_edit_captions().items():
        for text in texts:
            assert C.parse_caption(text) == {edit}, text


def test_parser_reads_every_kind_of_two_edit_reference():
    rng = np.random.default_rng(0)
    classes = C.EVENT_CLASSES
    for op1, op2 in itertools.product(C.OPERATIONS, repeat=2):
        for _ in range(6):
            c1, c2 = rng.choice(len(classes), 2, replace=False)
            edits = [(op1, classes[c1]), (op2, classes[c2])]
            for text in C.make_captions(edits, rng, num=5):
                assert C.parse_caption(text) == set(edits), text


def test_same_operation_pairs_use_the_shared_form_and_parse():
    rng = np.random.default_rng(1)
    edits = [("remove", "dog"), ("remove", "bells")]
    texts = {t for _ in range(40) for t in C.make_captions(edits, rng)}
    assert any(t.count("remove") == 1 and " and " in t for t in texts)
    assert all(C.parse_caption(t) == set(edits) for t in texts)


def test_make_captions_gives_distinct_lower_case_references():
    rng = np.random.default_rng(2)
    for op, cls in itertools.product(C.OPERATIONS, C.EVENT_CLASSES):
        texts = C.make_captions([(op, cls)], rng, num=5)
        assert len(set(texts)) == 5
        assert all(t == t.lower() and t.strip() == t for t in texts)


def test_make_captions_rejects_unknown_edits():
    with pytest.raises(ValueError, match="Unknown edit"):
        C.make_captions([("explode", "dog")], np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least one edit"):
        C.make_captions([], np.random.default_rng(0))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", set()),
        ("the the the", set()),
        ("remove the", set()),  # operation without a class
        ("the dog", set()),  # class without an operation
        ("make the car horn quieter", {("quieter", "horn")}),  # longest match: horn, not car
        ("make the car quieter", {("quieter", "car")}),
        ("Make the Dog LOUDER.", {("louder", "dog")}),
        ("make the dog louder louder and", {("louder", "dog")}),
        ("add a dog barking and and remove", {("add", "dog")}),
        ("make the dog and the bells louder", {("louder", "dog"), ("louder", "bells")}),
        ("remove the siren , then add thunder", {("remove", "siren"), ("add", "thunder")}),
        ("replace the bells with a louder one", {("louder", "bells")}),  # specific cue wins
        ("turn up the knocking", {("louder", "knocking")}),
        ("turn down the knocking", {("quieter", "knocking")}),
    ],
)
def test_parser_is_lenient_on_model_outputs(text, expected):
    assert C.parse_caption(text) == expected


def test_vocabulary_is_moderate():
    vocab = C.vocabulary()
    assert 80 <= len(vocab) <= 300, len(vocab)
    assert {"louder", "quieter", "thunder", "dog"} <= vocab


def test_exports():
    assert C.OPERATIONS == ("add", "remove", "louder", "quieter", "change", "earlier", "later")
    assert C.BACKGROUNDS == ("rain", "traffic")
    assert len(C.EVENT_CLASSES) >= 10
    assert set(C.DEFINITE) == set(C.INDEFINITE) == set(C.EVENT_CLASSES)
