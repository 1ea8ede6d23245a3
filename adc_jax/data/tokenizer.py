"""Word-level vocabulary built from the training captions, saved as JSON in the workdir.

Captions are lower-cased and split into words (letters, digits and apostrophes). By default
punctuation is dropped, which matches how pycocoevalcap's PTB tokenizer scores them; a vocabulary
built with `punctuation=True` (`data.punctuation_tokens`, the ADIFF configs) keeps "," "." ";"
":" "!" "?" as tokens, so multi-sentence explanations decode readably (scoring strips them either
way), and splits words on Unicode letters. Special tokens come first: <pad>=0, <bos>=1, <eos>=2,
<unk>=3; then any extra tokens (ADIFF's tier tokens "<tier1>".. "<tier3>", which the decoder
starts from instead of <bos>); then the words, most frequent first. Pure Python: the model code
imports the ids from here without pulling in the data stack.
"""

from __future__ import annotations

import collections
import json
import os
import re
from collections.abc import Iterable, Sequence

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
PUNCTUATION = frozenset(".,;:!?")
_WORD = re.compile(r"[a-z0-9']+")
_WORD_OR_PUNCTUATION = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[.,;:!?]")


def words(text: str, punctuation: bool = False) -> list[str]:
    """Lower-cases and splits a caption into tokens.

    punctuation=False: words of [a-z0-9'], everything else dropped. punctuation=True: words of
    Unicode letters and digits (with inner apostrophes) and each of . , ; : ! ? as a token.
    """
    pattern = _WORD_OR_PUNCTUATION if punctuation else _WORD
    return pattern.findall(text.lower())


def tier_token(tier: int) -> str:
    """The decoder's start token for ADIFF explanation tier `tier` (1..3): "<tier1>"..."""
    return f"<tier{int(tier)}>"


class Vocabulary:
    """Maps tokens to ids and back.

    Args:
      tokens: SPECIAL_TOKENS, then extra tokens, then words.
      punctuation: whether punctuation marks are tokens (see `words`).
    """

    def __init__(self, tokens: Sequence[str], punctuation: bool = False):
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"A vocabulary must start with {SPECIAL_TOKENS}.")
        self.tokens = list(tokens)
        self.punctuation = bool(punctuation)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("The vocabulary has duplicate tokens.")

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(
        cls,
        captions: Iterable[str],
        min_count: int = 1,
        *,
        punctuation: bool = False,
        extra_tokens: Sequence[str] = (),
    ) -> Vocabulary:
        """Vocabulary of every token seen at least min_count times, most frequent first."""
        counts = collections.Counter(w for c in captions for w in words(c, punctuation))
        kept = sorted(
            (w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls(list(SPECIAL_TOKENS) + list(extra_tokens) + kept, punctuation)

    def words(self, text: str) -> list[str]:
        """`words(text)` with this vocabulary's punctuation setting."""
        return words(text, self.punctuation)

    def start_id(self, tier: int) -> int:
        """The first decoder token of an example of `tier`: <bos> for 0, else its tier token.

        Raises ValueError when the vocabulary has no token for the tier (the run was not trained
        on it).
        """
        if not tier:
            return BOS
        token = tier_token(tier)
        if token not in self.index:
            trained = [t for t in self.tokens if t.startswith("<tier")] or ["none"]
            raise ValueError(
                f"This run was not trained on tier {tier} (its tier tokens: {', '.join(trained)})."
            )
        return self.index[token]

    def encode(self, text: str, max_tokens: int, start: int = BOS) -> tuple[list[int], bool]:
        """Caption -> [start, words..., <eos>] of at most max_tokens ids, and whether it was cut.

        Unknown words become <unk>. A caption longer than the limit keeps its first words and still
        ends with <eos>.
        """
        ids = [self.index.get(w, UNK) for w in self.words(text)]
        truncated = len(ids) > max_tokens - 2
        ids = ids[: max_tokens - 2]
        return [int(start), *ids, EOS], truncated

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> caption text; stops at <eos>, skips <pad>, <bos> and tier tokens; punctuation
        follows its word."""
        out: list[str] = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            token = self.tokens[i] if 0 <= i < len(self.tokens) else SPECIAL_TOKENS[UNK]
            if token.startswith("<tier"):  # a start token is never part of the text
                continue
            if token in PUNCTUATION and out:
                out[-1] += token
            else:
                out.append(token)
        return " ".join(out)

    def save(self, path: str) -> None:
        """Writes the vocabulary as JSON (atomically)."""
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"tokens": self.tokens, "punctuation": self.punctuation}, f)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> Vocabulary:
        with open(path) as f:
            saved = json.load(f)
        return cls(saved["tokens"], saved.get("punctuation", False))
