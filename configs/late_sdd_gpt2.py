"""The paper's best encoder (CAC + late SDD) with a pretrained GPT-2 writing the captions.

The argument is "<size>[,<conditioning>]": size "paper" (default: GPT-2 124M, which you download
once, see docs/lm_decoder.md), "quick" or "smoke" (a random tiny GPT-2 written under the data
directory on first use: no download); conditioning "prefix" (default, ADIFF's audio prefix) or
"cross" (zero-gated cross-attention in every GPT-2 block).

  python -m adc_jax.main --config=configs/late_sdd_gpt2.py:quick --workdir=runs/gpt2_quick
  python -m adc_jax.main --config=configs/late_sdd_gpt2.py --workdir=runs/gpt2 \\
      --config.model.lm_path=/path/to/gpt2

Captions are GPT-2 tokens (byte-level BPE), up to 48 per caption with <bos>/<eos>.
"""

from adc_jax.config import SIZES, experiment_config

LM_CONDITIONINGS = ("prefix", "cross")
# Where the paper size expects GPT-2 (override with --config.model.lm_path=DIR).
GPT2_DIR = "~/.cache/adc_jax/lm/gpt2"
# Audio prefix embeddings per size (ADIFF uses 40).
PREFIX_LEN = {"paper": 40, "quick": 8, "smoke": 4}
# Longest caption in GPT-2 tokens (<bos> and <eos> included).
MAX_TOKENS = 48


def parse_arg(arg: str | None, name: str) -> tuple[list[str], str]:
    """'<...>,<conditioning>' -> (the other parts, conditioning)."""
    parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
    conditioning = [p for p in parts if p in LM_CONDITIONINGS]
    if len(conditioning) > 1:
        raise ValueError(f"{name} takes one conditioning of {LM_CONDITIONINGS}; got {arg!r}.")
    return [p for p in parts if p not in LM_CONDITIONINGS], (conditioning or ["prefix"])[0]


def use_gpt2(c, size: str, conditioning: str) -> None:
    """Sets config `c` (of `size`) to caption with GPT-2 conditioned by `conditioning`."""
    c.model.lm_path = GPT2_DIR if size == "paper" else f"tiny:{size}"
    c.model.lm_conditioning = conditioning
    c.model.lm_prefix_len = PREFIX_LEN[size]
    c.data.punctuation_tokens = True  # informational: the LM tokenizer keeps punctuation


def get_config(arg=None):
    parts, conditioning = parse_arg(arg, "configs/late_sdd_gpt2.py")
    if len(parts) > 1 or (parts and parts[0] not in SIZES):
        raise ValueError(
            "configs/late_sdd_gpt2.py takes '<size>[,<conditioning>]' with size in "
            f"{SIZES} and conditioning in {LM_CONDITIONINGS}; got {arg!r}."
        )
    size = parts[0] if parts else "paper"
    c = experiment_config(size, name=f"late_sdd_gpt2_{conditioning}", attention="cross", sdd="late")
    use_gpt2(c, size, conditioning)
    c.data.max_caption_tokens = MAX_TOKENS
    c.model.max_decode_len = MAX_TOKENS
    return c
