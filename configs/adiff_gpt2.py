"""ADIFF's explanations (configs/adiff.py) written by a pretrained GPT-2, ADIFF's own decoder.

As configs/adiff.py (CAC encoder + late SDD, all three tiers, greedy decoding), but the captions
are GPT-2 tokens and each tier reaches the LM as a text prompt after the audio prefix
(`adc_jax.data.lm_tokenizer.TIER_PROMPTS`). The argument is "<subset>[,<size>][,<conditioning>]":
subset "acd" (default) or "cld"; size "paper" (default: GPT-2 124M from
~/.cache/adc_jax/lm/gpt2 or --config.model.lm_path, 40 prefix embeddings as ADIFF), "quick" or
"smoke" (a random tiny GPT-2, no download); conditioning "prefix" (default) or "cross".

  python -m adc_jax.main --config=configs/adiff_gpt2.py:acd --workdir=runs/adiff_gpt2_acd \\
      --config.data.csv_dir=/path/to/ADIFF/data/ACD --config.data.audio_dir=/path/to/audio \\
      --config.model.lm_path=/path/to/gpt2
"""

import importlib.util
import os


def _sibling(name: str):
    """Loads configs/<name>.py beside this file (config files are not a package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"adc_jax_configs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Longest explanation in GPT-2 tokens at the tiny sizes (their LM has 128 positions).
TINY_MAX_TOKENS = {"quick": 96, "smoke": 64}


def get_config(arg=None):
    gpt2 = _sibling("late_sdd_gpt2")
    parts, conditioning = gpt2.parse_arg(arg, "configs/adiff_gpt2.py")
    c = _sibling("adiff").get_config(",".join(parts))
    size = c.size
    gpt2.use_gpt2(c, size, conditioning)
    c.name = f"{c.name}_gpt2_{conditioning}"
    if size in TINY_MAX_TOKENS:
        n = TINY_MAX_TOKENS[size]
        c.data.max_caption_tokens = c.model.max_decode_len = n
        c.data.token_buckets = f"{n // 3},{2 * n // 3},{n}"
    return c
