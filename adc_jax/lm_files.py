"""The files of a pretrained language model directory, and their checks (pure Python).

A GPT-2 directory is what `huggingface-cli download gpt2` (or `transformers`' `save_pretrained`)
writes: `config.json` (the architecture), `model.safetensors` (the weights) and `tokenizer.json`
(the byte-level BPE tokenizer, read with the `tokenizers` package). `config.model.lm_path` names
one; `tiny:<size>` instead names a random tiny GPT-2 written on first use (`adc_jax.models.
tiny_gpt2`). The config's checks, the model loader and the tokenizer all read the directory
through here, so a directory without the files, a non-GPT-2 config or a tokenizer larger than
the model's vocabulary is refused with the same message everywhere, before anything is built.
"""

from __future__ import annotations

import json
import os
from typing import Any

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
LM_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)
# `model.lm_path` values "tiny:<size>": a random tiny GPT-2 generated on first use.
TINY_PREFIX = "tiny:"
TINY_SIZES = ("smoke", "quick")
# The config.json fields the GPT-2 module needs (integers).
REQUIRED_FIELDS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
DOWNLOAD_HINT = (
    "download one with `huggingface-cli download gpt2 config.json model.safetensors "
    "tokenizer.json --local-dir DIR` (see docs/lm_decoder.md)"
)


class LMFilesError(ValueError):
    """A language-model directory cannot be used; the message says which file and why."""


def tiny_size(spec: str) -> str | None:
    """'tiny:quick' -> 'quick'; None for anything else (a directory)."""
    if isinstance(spec, str) and spec.startswith(TINY_PREFIX):
        return spec[len(TINY_PREFIX) :]
    return None


def read_lm_config(directory: str) -> dict[str, Any]:
    """config.json of a GPT-2 directory, checked: model_type "gpt2" and the integer fields.

    Raises LMFilesError naming the directory and the problem.
    """
    directory = os.path.expanduser(directory)
    if not os.path.isdir(directory):
        raise LMFilesError(f"{directory!r} is not a directory; {DOWNLOAD_HINT}.")
    missing = [f for f in LM_FILES if not os.path.isfile(os.path.join(directory, f))]
    if missing:
        raise LMFilesError(
            f"{directory!r} lacks {', '.join(missing)} (a GPT-2 directory holds "
            f"{', '.join(LM_FILES)}); {DOWNLOAD_HINT}."
        )
    path = os.path.join(directory, CONFIG_FILE)
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise LMFilesError(f"Cannot read {path}: {e}.") from e
    if not isinstance(cfg, dict) or cfg.get("model_type") != "gpt2":
        kind = cfg.get("model_type") if isinstance(cfg, dict) else type(cfg).__name__
        raise LMFilesError(
            f"{path} describes a {kind!r} model, not GPT-2 (model_type must be 'gpt2'); "
            "adc_jax's language decoder is GPT-2's architecture."
        )
    bad = [k for k in REQUIRED_FIELDS if not (isinstance(cfg.get(k), int) and cfg[k] > 0)]
    if bad:
        raise LMFilesError(f"{path} lacks the positive integer field(s) {', '.join(bad)}.")
    if cfg["n_embd"] % cfg["n_head"]:
        raise LMFilesError(f"{path}: n_embd={cfg['n_embd']} is not divisible by n_head.")
    for key, ok in (("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False)):
        if cfg.get(key, ok) != ok:
            raise LMFilesError(f"{path}: {key}={cfg[key]!r} is not supported (only {ok}).")
    return cfg


def tokenizer_size(directory: str) -> int:
    """1 + the largest token id of tokenizer.json (its BPE vocabulary and added tokens)."""
    path = os.path.join(os.path.expanduser(directory), TOKENIZER_FILE)
    try:
        with open(path) as f:
            tok = json.load(f)
        ids = list(tok["model"]["vocab"].values()) + [t["id"] for t in tok.get("added_tokens", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise LMFilesError(f"Cannot read {path} as a Hugging Face tokenizer.json: {e!r}.") from e
    return max(ids) + 1


def check_lm_directory(directory: str) -> dict[str, Any]:
    """`read_lm_config`, plus: the tokenizer's ids fit the model's vocabulary. Returns config.json."""
    cfg = read_lm_config(directory)
    size = tokenizer_size(directory)
    if size > cfg["vocab_size"]:
        raise LMFilesError(
            f"{os.path.join(directory, TOKENIZER_FILE)} has token ids up to {size - 1}, but "
            f"{os.path.join(directory, CONFIG_FILE)} says vocab_size={cfg['vocab_size']}: the "
            "tokenizer does not belong to this model."
        )
    return cfg
