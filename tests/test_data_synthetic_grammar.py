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
    with pytest.raises(ValueError, match="no-difference references"):
        C.make_captions([], np.random.default_rng(0), num=len(C.NO_DIFFERENCE_CAPTIONS) + 1)


def test_a_pair_without_edits_gets_distinct_no_difference_references():
    texts = C.make_captions([], np.random.default_rng(3), num=5)
    assert len(set(texts)) == 5
    assert set(texts) <= set(C.NO_DIFFERENCE_CAPTIONS)


@pytest.mark.parametrize("classes", [(), ("sea_waves", "crying_baby", "clock_tick")])
def test_no_difference_references_read_back_as_no_edit(classes):
    for text in C.NO_DIFFERENCE_CAPTIONS:
        assert C.parse_caption(text, classes) == frozenset(), text
        assert C.says_no_difference(text) and C.reads_no_difference(text, classes), text


def test_no_edit_caption_says_no_difference():
    for texts in C.all_single_edit_captions().values():
        for text in texts:
            assert not C.says_no_difference(text), text
    assert C.says_no_difference("The two audio clips are identical.")
    assert C.says_no_difference("There is NO difference, really")
    # Saying it is not enough for a "no difference" answer when an edit is asked for too.
    assert not C.reads_no_difference("no change, but add a dog barking")
    assert not C.says_no_difference("a different dog")  # "different" alone is a change cue
    assert not C.says_no_difference("")


def test_inverse_edits_undo_each_operation():
    edits = {(op, "dog") for op in C.OPERATIONS}
    inverse = C.inverse_edits(edits)
    assert inverse == edits  # every operation has its inverse among them
    assert C.inverse_edits([("add", "dog"), ("louder", "rain")]) == {
        ("remove", "dog"),
        ("quieter", "rain"),
    }
    assert C.inverse_edits([("earlier", "horn"), ("change", "siren")]) == {
        ("later", "horn"),
        ("change", "siren"),
    }
    assert C.inverse_edits([]) == frozenset()
    for op in C.OPERATIONS:
        assert C.INVERSE_OPERATION[C.INVERSE_OPERATION[op]] == op


def test_check_phrasing_refuses_a_class_named_by_no_difference_words():
    with pytest.raises(ValueError, match="no-difference caption"):
        C.check_phrasing(["nothing"])  # "nothing is different" -> change(nothing)


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
