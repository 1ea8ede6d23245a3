"""In-memory records with `caption_tiers` (ADIFF-like), shared by the vocabulary, pipeline and
eval-split tests: 40 pairs whose tier 1 answers have 2-6 words and tier 3 answers 20-40; every
5th pair lacks tier 3."""

from __future__ import annotations

import numpy as np

from adc_jax import config as config_lib
from adc_jax.data.tokenizer import Vocabulary, tier_token

WORDS = ["dog", "bark", "rain", "car", "louder", "quieter", "and", "the"]


def record(i: int, answers: dict[int, list[str]]) -> dict:
    rng = np.random.default_rng(i)
    captions = [a for t in sorted(answers) for a in answers[t]]
    tiers = [t for t in sorted(answers) for _ in answers[t]]
    return {
        "key": f"pair{i}".encode(),
        "audio1": rng.integers(-3000, 3000, 1600 + i).astype(np.int16),
        "audio2": rng.integers(-3000, 3000, 1700 + i).astype(np.int16),
        "captions": [c.encode() for c in captions],
        "caption_tiers": np.asarray(tiers, np.int32),
        "scene": b"acd",
        "edit_ops": [],
        "edit_classes": [],
        "edit_magnitudes": np.zeros((0,), np.float32),
    }


def _answer(rng: np.random.Generator, n_words: int) -> str:
    return " ".join(rng.choice(WORDS, n_words)) + "."


def tiered_records() -> list[dict]:
    """40 pairs: tier 1 answers of 2-6 words, tier 3 of 20-40; every 5th pair lacks tier 3."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(40):
        answers = {1: [_answer(rng, int(rng.integers(2, 7))) for _ in range(2)]}
        if i % 5:
            answers[3] = [_answer(rng, int(rng.integers(20, 41)))]
        out.append(record(i, answers))
    return out


def tiered_config(**data):
    """The smoke config on ADIFF tiers 1 and 3 with punctuation tokens, batches of 8."""
    config = config_lib.base_config("smoke")
    config.data.name = "adiff"
    config.data.adiff_tiers = "1,3"
    config.data.punctuation_tokens = True
    config.data.max_caption_tokens = 48
    config.data.clip_seconds = 0.25  # longer than every clip: lengths identify records
    config.data.num_workers = 0
    config.train.batch_size = 8
    config.data.update(data)
    return config


def tiered_vocab(stats) -> Vocabulary:
    return Vocabulary.build(
        stats.captions, punctuation=True, extra_tokens=[tier_token(1), tier_token(3)]
    )


def answers_of(record, tier) -> set[str]:
    return {
        c.decode()
        for c, t in zip(record["captions"], record["caption_tiers"], strict=True)
        if t == tier
    }
