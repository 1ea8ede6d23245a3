"""Captions as a pretrained language model's tokens: the `Vocabulary` interface over tokenizer.json.

With `config.model.lm_path` set, captions are tokenised by the LM's own byte-level BPE tokenizer
(the `tokenizers` package reading `tokenizer.json`) instead of the run's word vocabulary. The rest
of adc_jax keeps its ids: <pad>=0, <bos>=1, <eos>=2, <unk>=3 (never produced), then one start
token per ADIFF tier, then the LM's ids shifted by `offset` (= 4 + number of tiers). The decoder
(`adc_jax.models.lm_decoder`) maps the shifted ids back to the LM's, and the LM's end-of-text
token to <eos>, so padding, the loss mask, the searches' <bos>/<eos> and the per-tier start
tokens all work as with a word vocabulary; captions decode back to text for scoring as before.

ADIFF's tiers reach the LM as text prompts (`TIER_PROMPTS`): the decoder puts the prompt of a
row's start token after the audio prefix. Pure Python plus `tokenizers`: the model code builds
its prompt table from here without the data stack.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import ml_collections

from adc_jax import lm_files
from adc_jax.config import parse_tiers
from adc_jax.data.tokenizer import BOS, EOS, SPECIAL_TOKENS, tier_token

# The text prompt of each ADIFF tier (our wording of ADIFF's three levels of detail).
TIER_PROMPTS = {
    1: "Explain the difference between the two audios in a few words.",
    2: "Explain the difference between the two audios in one sentence.",
    3: "Explain the difference between the two audios in detail.",
}
# Marks a saved LM tokenizer in a workdir's vocab.json.
SAVED_KIND = "lm_tokenizer"


def run_tiers(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """The ADIFF tiers a run trains on (their start tokens and prompts); () for untiered data."""
    if config.data.name != "adiff":
        return ()
    return parse_tiers(config.data.adiff_tiers) or ()


def _load_tokenizer(text: str):
    from tokenizers import Tokenizer  # a compiled package; only LM runs need it

    return Tokenizer.from_str(text)


class LMTokenizer:
    """A language model's tokenizer behind `adc_jax.data.tokenizer.Vocabulary`'s interface.

    Args:
      tokenizer_json: the text of the LM's tokenizer.json.
      lm_vocab_size: the LM's vocabulary size (config.json vocab_size, >= the tokenizer's).
      eos_id: the LM's end-of-text id (config.json eos_token_id).
      tiers: the ADIFF tiers with start tokens (() for untiered data).
    """

    punctuation = True  # captions keep their punctuation (scoring strips it)

    def __init__(
        self, tokenizer_json: str, lm_vocab_size: int, eos_id: int, tiers: Sequence[int] = ()
    ):
        self.tokenizer_json = tokenizer_json
        self.tokenizer = _load_tokenizer(tokenizer_json)
        self.lm_vocab_size, self.eos_id = int(lm_vocab_size), int(eos_id)
        self.tiers = tuple(int(t) for t in tiers)
        size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        if size > self.lm_vocab_size or not 0 <= self.eos_id < self.lm_vocab_size:
            raise lm_files.LMFilesError(
                f"The tokenizer has {size} tokens and end-of-text id {self.eos_id}, but the model's "
                f"vocabulary has {self.lm_vocab_size}: the tokenizer does not belong to the model."
            )
        self.extra = [tier_token(t) for t in self.tiers]
        self.offset = len(SPECIAL_TOKENS) + len(self.extra)
        self.index = {t: i for i, t in enumerate(list(SPECIAL_TOKENS) + self.extra)}

    @classmethod
    def from_directory(cls, directory: str, tiers: Sequence[int] = ()) -> LMTokenizer:
        """The tokenizer of a GPT-2 directory (checked by `lm_files.check_lm_directory`)."""
        cfg = lm_files.check_lm_directory(directory)
        with open(os.path.join(os.path.expanduser(directory), lm_files.TOKENIZER_FILE)) as f:
            text = f.read()
        return cls(text, cfg["vocab_size"], cfg.get("eos_token_id", cfg["vocab_size"] - 1), tiers)

    def __len__(self) -> int:
        return self.offset + self.lm_vocab_size

    def start_id(self, tier: int) -> int:
        """<bos> for tier 0, else the tier's start token (ValueError if not trained on it)."""
        if not tier:
            return BOS
        token = tier_token(tier)
        if token not in self.index:
            raise ValueError(
                f"This run was not trained on tier {tier} (its tiers: {list(self.tiers) or 'none'})."
            )
        return self.index[token]

    def lm_ids(self, text: str) -> list[int]:
        """The LM's token ids of `text` (no special tokens added)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def words(self, text: str) -> list[str]:
        """The LM's tokens of `text` (what a caption's length is counted in)."""
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str, max_tokens: int, start: int = BOS) -> tuple[list[int], bool]:
        """Caption -> [start, LM tokens + offset..., <eos>] of at most max_tokens ids, and whether
        it was cut (it keeps its first tokens and still ends with <eos>)."""
        ids = [i + self.offset for i in self.lm_ids(text.strip())]
        truncated = len(ids) > max_tokens - 2
        return [int(start), *ids[: max_tokens - 2], EOS], truncated

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; stops at <eos>, skips the special and start tokens."""
        lm = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if self.offset <= i < len(self) and i - self.offset != self.eos_id:
                lm.append(i - self.offset)
        return self.tokenizer.decode(lm, skip_special_tokens=True).strip()

    def prompt_table(self) -> tuple[tuple[int, ...], ...]:
        """Row r: the LM ids of the prompt of start id (BOS if r == 0 else the r-th tier token);
        row 0 is empty. Rows differ in length (the decoder pads them)."""
        return ((),) + tuple(tuple(self.lm_ids(TIER_PROMPTS[t])) for t in self.tiers)

    def save(self, path: str) -> None:
        """Writes the tokenizer (tokenizer.json inside, so evaluation needs no LM directory)."""
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(
                {
                    "kind": SAVED_KIND,
                    "tokenizer": self.tokenizer_json,
                    "lm_vocab_size": self.lm_vocab_size,
                    "eos_id": self.eos_id,
                    "tiers": list(self.tiers),
                },
                f,
            )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> LMTokenizer:
        with open(path) as f:
            saved = json.load(f)
        return cls(saved["tokenizer"], saved["lm_vocab_size"], saved["eos_id"], saved["tiers"])


def is_saved_lm_tokenizer(path: str) -> bool:
    """Whether a workdir's vocab.json holds an LM tokenizer (not a word vocabulary)."""
    with open(path) as f:
        return json.load(f).get("kind") == SAVED_KIND
