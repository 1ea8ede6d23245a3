"""Writes a random tiny GPT-2 directory (config.json, model.safetensors, tokenizer.json).

  python tools/make_tiny_gpt2.py --output DIR [--size=quick] [--seed=0]

The same files `model.lm_path="tiny:<size>"` writes on first use under the data directory
(`adc_jax.rundir.ensure_tiny_lm`): a byte-level BPE tokenizer trained on the synthetic data's
captions and the ADIFF tier prompts, and random weights in the hub's safetensors layout. Point a
config at the directory with `--config.model.lm_path=DIR`. No torch, no download.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import app, flags  # noqa: E402

from adc_jax.models import tiny_gpt2  # noqa: E402
from adc_jax.rundir import tiny_lm_corpus  # noqa: E402

_OUTPUT = flags.DEFINE_string("output", None, "Directory to write.", required=True)
_SIZE = flags.DEFINE_enum("size", "quick", sorted(tiny_gpt2.TINY_SIZES), "Architecture.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random weights.")


def main(argv) -> None:
    del argv
    directory = tiny_gpt2.write_tiny_gpt2(_OUTPUT.value, _SIZE.value, tiny_lm_corpus(), _SEED.value)
    print(f"Wrote a random {_SIZE.value} GPT-2 to {directory}: {tiny_gpt2.TINY_SIZES[_SIZE.value]}")


if __name__ == "__main__":
    app.run(main)
