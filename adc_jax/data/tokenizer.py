"""Word-level vocabulary built from the training captions, saved as JSON in the workdir.

Captions are lower-cased and split into words (letters, digits and apostrophes); punctuation is
dropped, which matches how pycocoevalcap's PTB tokenizer scores them. Special tokens come first:
<pad>=0, <bos>=1, <eos>=2, <unk>=3. Pure Python: the model code imports the ids from here without
pulling in the data stack.
"""

from __future__ import annotations

import collections
import json
import os
import re
from collections.abc import Iterable, Sequence

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """Lower-cases and splits a caption into words; punctuation and other characters are dropped."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """Maps words to ids and back."""

    def __init__(self, tokens: Sequence[str]):
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"A vocabulary must start with {SPECIAL_TOKENS}.")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("The vocabulary has duplicate tokens.")

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Vocabulary of every word seen at least min_count times, most frequent first."""
        counts = collections.Counter(w for c in captions for w in words(c))
        kept = sorted(
            (w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls(list(SPECIAL_TOKENS) + kept)

    def encode(self, text: str, max_tokens: int) -> tuple[list[int], bool]:
        """Caption -> [<bos>, words..., <eos>] of at most max_tokens ids, and whether it was cut.

        Unknown words become <unk>. A caption longer than the limit keeps its first words and still
        ends with <eos>.
        """
        ids = [self.index.get(w, UNK) for w in words(text)]
        truncated = len(ids) > max_tokens - 2
        ids = ids[: max_tokens - 2]
        return [BOS, *ids, EOS], truncated

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> caption text; stops at <eos>, skips <pad>/<bos>."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            out.append(self.tokens[i] if 0 <= i < len(self.tokens) else SPECIAL_TOKENS[UNK])
        return " ".join(out)

    def save(self, path: str) -> None:
        """Writes the vocabulary as JSON (atomically)."""
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"tokens": self.tokens}, f)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> Vocabulary:
        with open(path) as f:
            return cls(json.load(f)["tokens"])
