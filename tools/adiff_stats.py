"""What ADIFF's explanations look like to the tokenizer, from the CSVs alone (no audio needed).

  python tools/adiff_stats.py --csv_dir=/path/to/ADIFF/data/CLD --subset=cld
  python tools/adiff_stats.py --csv_dir=/path/to/ADIFF/data/ACD --subset=acd --min_count=2

Per split and tier: rows, pairs, answer length in words (median / max) and in tokens as the
ADIFF configs tokenise them (punctuation tokens, start token and <eos> included), the share of
answers longer than --max_tokens (cut in training), and the unknown-token rate: the share of
tokens outside a vocabulary built from the train split's answers of all tiers with words seen at
least --min_count times (what `configs/adiff.py` trains with: min count 2, 320 tokens).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from adc_jax.data import adiff
from adc_jax.data.tokenizer import UNK, Vocabulary, tier_token


def split_statistics(
    csv_dir: str, subset: str, min_count: int, max_tokens: int
) -> tuple[list[dict], int]:
    """One row per (split, tier) with the statistics described in the module docstring."""
    splits = {s: adiff.read_split(csv_dir, subset, s) for s in adiff.SPLITS}
    if splits["train"] is None:
        raise FileNotFoundError(
            f"No train CSV of {subset!r} in {csv_dir} (expected e.g. "
            f"{adiff.csv_name(subset, 'train', 1)})."
        )
    train_answers = [c for p in splits["train"].pairs for c in p.captions]
    vocab = Vocabulary.build(
        train_answers,
        min_count=min_count,
        punctuation=True,
        extra_tokens=[tier_token(t) for t in adiff.TIERS],
    )
    rows = []
    for split, pairs in splits.items():
        if pairs is None:
            continue
        for tier in adiff.TIERS:
            answers = [
                c
                for p in pairs.pairs
                for c, t in zip(p.captions, p.tiers, strict=True)
                if t == tier
            ]
            if not answers:
                continue
            n_words = np.asarray([len(a.split()) for a in answers])
            tokens = [vocab.words(a) for a in answers]
            n_tokens = np.asarray([len(t) + 2 for t in tokens])
            unknown = sum(vocab.index.get(w, UNK) == UNK for t in tokens for w in t)
            rows.append(
                {
                    "split": split,
                    "tier": tier,
                    "rows": pairs.rows.get(tier, 0),
                    "pairs": sum(tier in p.tiers for p in pairs.pairs),
                    "median_words": float(np.median(n_words)),
                    "max_words": int(n_words.max()),
                    "median_tokens": float(np.median(n_tokens)),
                    "max_tokens": int(n_tokens.max()),
                    "cut": float(np.mean(n_tokens > max_tokens)),
                    "unknown_rate": unknown / max(1, sum(len(t) for t in tokens)),
                }
            )
    return rows, len(vocab)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv_dir", required=True, help="folder of the ADIFF CSVs")
    parser.add_argument("--subset", choices=adiff.SUBSETS, default="acd")
    parser.add_argument("--min_count", type=int, default=2, help="vocabulary minimum count")
    parser.add_argument("--max_tokens", type=int, default=320, help="training token limit")
    args = parser.parse_args(argv)
    try:
        rows, vocab_size = split_statistics(
            args.csv_dir, args.subset, args.min_count, args.max_tokens
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.subset.upper()}: vocabulary of {vocab_size} tokens (train answers, min count "
        f"{args.min_count}, punctuation kept)\n"
    )
    print(
        "| split | tier | rows | pairs | words median / max | tokens median / max | "
        f"> {args.max_tokens} tokens | unknown tokens |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['split']} | {r['tier']} | {r['rows']} | {r['pairs']} | "
            f"{r['median_words']:.0f} / {r['max_words']} | "
            f"{r['median_tokens']:.0f} / {r['max_tokens']} | {100 * r['cut']:.1f}% | "
            f"{100 * r['unknown_rate']:.2f}% |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
