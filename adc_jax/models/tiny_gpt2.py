"""A random tiny GPT-2 directory (config.json, model.safetensors, tokenizer.json), no download.

`config.model.lm_path = "tiny:smoke"` or `"tiny:quick"` (the `:smoke`/`:quick` sizes of
`configs/late_sdd_gpt2.py`) name one of these; it is written on first use under the data
directory (`adc_jax.rundir.ensure_tiny_lm`), or by `tools/make_tiny_gpt2.py`. The files have the
hub's format, so the path a real GPT-2 takes (checks, loading, tokenizer) is the one exercised.
The tokenizer is a byte-level BPE (GPT-2's kind) trained on the text it is given (the synthetic
data's caption grammar and the tier prompts), with <|endoftext|> as its end-of-text token.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import ml_collections
import numpy as np

from adc_jax import lm_files
from adc_jax.config import default_data_dir
from adc_jax.models import safetensors_io

# Architecture per size: width, layers, heads, positions, BPE vocabulary size.
TINY_SIZES = {
    "smoke": {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 128, "vocab_size": 384},
    "quick": {"n_embd": 128, "n_layer": 2, "n_head": 4, "n_positions": 128, "vocab_size": 768},
}
END_OF_TEXT = "<|endoftext|>"


def lm_directory(config: ml_collections.ConfigDict) -> str:
    """`config.model.lm_path` as a directory: itself, or where "tiny:<size>" is written
    (<data_dir>/tiny_gpt2/<size>; a local cache folder when the data directory is remote, e.g.
    gs://, since these files are written with plain file I/O)."""
    size = lm_files.tiny_size(config.model.lm_path)
    if size is None:
        return os.path.expanduser(config.model.lm_path)
    data_dir = config.data.data_dir or default_data_dir()
    if "://" in data_dir:
        data_dir = os.path.join("~", ".cache", "adc_jax")
    return os.path.join(os.path.expanduser(data_dir), "tiny_gpt2", size)


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> str:
    """A byte-level BPE tokenizer.json (GPT-2's pre-tokenizer and decoder) trained on corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer)
    return tok.to_str()


def random_weights(config: dict, seed: int) -> dict[str, np.ndarray]:
    """GPT-2 tensors named as the hub's model.safetensors, drawn as HF initialises them."""
    rng = np.random.default_rng(seed)
    d, inner = config["n_embd"], config.get("n_inner") or 4 * config["n_embd"]

    def normal(*shape):
        return (0.02 * rng.standard_normal(shape)).astype(np.float32)

    w = {
        "wte.weight": normal(config["vocab_size"], d),
        "wpe.weight": normal(config["n_positions"], d),
        "ln_f.weight": np.ones(d, np.float32),
        "ln_f.bias": np.zeros(d, np.float32),
    }
    for i in range(config["n_layer"]):
        p = f"h.{i}."
        w.update(
            {
                p + "ln_1.weight": np.ones(d, np.float32),
                p + "ln_1.bias": np.zeros(d, np.float32),
                p + "attn.c_attn.weight": normal(d, 3 * d),
                p + "attn.c_attn.bias": np.zeros(3 * d, np.float32),
                p + "attn.c_proj.weight": normal(d, d),
                p + "attn.c_proj.bias": np.zeros(d, np.float32),
                p + "ln_2.weight": np.ones(d, np.float32),
                p + "ln_2.bias": np.zeros(d, np.float32),
                p + "mlp.c_fc.weight": normal(d, inner),
                p + "mlp.c_fc.bias": np.zeros(inner, np.float32),
                p + "mlp.c_proj.weight": normal(inner, d),
                p + "mlp.c_proj.bias": np.zeros(d, np.float32),
            }
        )
    return w


def write_tiny_gpt2(directory: str, size: str, corpus: Iterable[str], seed: int = 0) -> str:
    """Writes a random GPT-2 of `size` (TINY_SIZES) with a tokenizer trained on `corpus`.

    Files are written to a temporary name and renamed, so a directory holding config.json is
    complete. Returns the directory.
    """
    if size not in TINY_SIZES:
        raise ValueError(f"Unknown tiny GPT-2 size {size!r}; use one of {sorted(TINY_SIZES)}.")
    arch = TINY_SIZES[size]
    os.makedirs(directory, exist_ok=True)
    tokenizer_json = train_tokenizer(corpus, arch["vocab_size"])
    vocab = json.loads(tokenizer_json)["model"]["vocab"]
    eos = vocab[END_OF_TEXT]
    config = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "activation_function": "gelu_new",
        "vocab_size": arch["vocab_size"],
        "n_positions": arch["n_positions"],
        "n_embd": arch["n_embd"],
        "n_layer": arch["n_layer"],
        "n_head": arch["n_head"],
        "n_inner": None,
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "tie_word_embeddings": True,
    }
    tmp = os.path.join(directory, ".tmp")
    with open(tmp, "w") as f:
        f.write(tokenizer_json)
    os.replace(tmp, os.path.join(directory, lm_files.TOKENIZER_FILE))
    safetensors_io.save_file(random_weights(config, seed), tmp, {"format": "pt"})
    os.replace(tmp, os.path.join(directory, lm_files.WEIGHTS_FILE))
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2)
    os.replace(tmp, os.path.join(directory, lm_files.CONFIG_FILE))
    return directory
