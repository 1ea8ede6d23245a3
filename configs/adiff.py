"""ADIFF's difference explanations (ACD over AudioCaps, CLD over Clotho v2.1), all three tiers.

The model is the paper's best (CAC encoder + late SDD); the decoder starts from a tier token, so
one model writes few-word (tier 1), one-sentence (tier 2) or detailed (tier 3) explanations.
Point it at your downloads:

  python -m adc_jax.main --config=configs/adiff.py:cld --workdir=runs/adiff_cld \\
      --config.data.csv_dir=/path/to/ADIFF/data/CLD --config.data.audio_dir=/path/to/audio

The argument is "<subset>[,<size>]": subset "acd" (default) or "cld"; size "paper" (default),
"quick" or "smoke". Clips: ACD 10 s (AudioCaps' length); CLD 30 s, Clotho's longest, so no
clip loses its end (3x the encoder frames of a 10 s clip; --config.data.clip_seconds=15 halves
the cost and crops the longer half of Clotho). Captions: punctuation kept as tokens, words seen
at least twice, up to 320 tokens, batches bucketed by length (64 / 128 / 320 tokens: tier 1 and
2 answers are not padded to tier 3's length). Evaluation decodes greedily, as ADIFF reports.
"""

from adc_jax.config import ADIFF_SUBSETS, SIZES, experiment_config

# Clip length per subset (seconds).
CLIP_SECONDS = {"acd": 10.0, "cld": 30.0}
# Longest caption in tokens (tier 3 answers reach about 230 words, plus punctuation).
MAX_TOKENS = 320


def get_config(arg=None):
    parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
    subset = next((p for p in parts if p in ADIFF_SUBSETS), "acd")
    sizes = [p for p in parts if p in SIZES]
    unknown = [p for p in parts if p not in ADIFF_SUBSETS and p not in SIZES]
    if unknown or len(sizes) > 1:
        raise ValueError(
            f"configs/adiff.py takes '<subset>[,<size>]' with subset in {ADIFF_SUBSETS} and size "
            f"in {SIZES}; got {arg!r}."
        )
    size = sizes[0] if sizes else "paper"
    c = experiment_config(size, name=f"adiff_{subset}", attention="cross", sdd="late")
    c.data.name = "adiff"
    c.data.adiff_subset = subset
    c.data.adiff_tiers = "1,2,3"
    c.data.clip_seconds = CLIP_SECONDS[subset] if size == "paper" else c.data.clip_seconds
    c.data.punctuation_tokens = True
    c.data.vocab_min_count = 2 if size != "smoke" else 1
    c.data.max_caption_tokens = MAX_TOKENS if size != "smoke" else 64
    c.data.token_buckets = "64,128,320" if size != "smoke" else "32,64"
    c.model.max_decode_len = c.data.max_caption_tokens
    c.eval.decode = "greedy"
    return c
