"""Random batches in the input pipeline's format, for tests and benchmarks of the step.

Pure NumPy: it imports nothing of the data stack (tfds, grain), so it runs on an image that only
has jax, flax, optax, numpy and ml-collections.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from adc_jax.data.features import INT16_SCALE
from adc_jax.data.tokenizer import BOS, EOS, PAD


def random_batch(
    config: ml_collections.ConfigDict,
    vocab_size: int,
    *,
    batch_size: int | None = None,
    seed: int = 0,
    caption_words: int | None = None,
    dtype: str = "int16",
) -> dict[str, np.ndarray]:
    """A host batch of random audio pairs and random captions; the same for the same arguments.

    Clip 1 of each pair is a sine tone (200-2000 Hz, random per row) plus noise, clip 2 noise
    only. Clip 1 always fills the array; clip 2 of every third row (rows 0, 3, 6, ...) is half as
    long, zero after its length, as the pipeline pads a short clip. Rows differ (tone, length,
    caption), so rows put on the wrong devices give another loss.

    Args:
      config: uses data.clip_seconds, data.sample_rate, data.max_caption_tokens and (unless
        batch_size is given) train.batch_size.
      vocab_size: words are drawn from [4, vocab_size) (0-3 are <pad>, <bos>, <eos>, <unk>).
      batch_size: B; default config.train.batch_size.
      seed: of the NumPy generator.
      caption_words: words per caption; default 3 + (row % 6), i.e. 3 to 8 (at most
        max_caption_tokens - 2).
      dtype: "int16" (full scale 32767, as the pipeline delivers audio) or "float32" (the same
        signal divided by 32767 and not rounded, e.g. so that a test can inject a NaN).

    Returns:
      wav1, wav2: [B, N] int16 or float32, N = round(clip_seconds * sample_rate);
      wav1_len, wav2_len: [B] int32 valid samples;
      tokens: [B, L] int32 <bos> w1 ... <eos> <pad>..., L = data.max_caption_tokens.
    """
    if dtype not in ("int16", "float32"):
        raise ValueError(f"dtype must be 'int16' or 'float32', got {dtype!r}.")
    b = config.train.batch_size if batch_size is None else batch_size
    n = int(round(config.data.clip_seconds * config.data.sample_rate))
    length = config.data.max_caption_tokens
    if caption_words is not None and not 0 <= caption_words <= length - 2:
        raise ValueError(
            f"caption_words={caption_words} does not fit data.max_caption_tokens={length} "
            "with <bos> and <eos>; use at most max_caption_tokens - 2."
        )
    rng = np.random.default_rng(seed)
    t = np.arange(n) / config.data.sample_rate
    tone = np.sin(2 * np.pi * rng.uniform(200, 2000, (b, 1)) * t)
    wav1 = 3000 * tone + 1000 * rng.normal(size=(b, n))
    wav2 = 1500 * rng.normal(size=(b, n))
    len1 = np.full(b, n, np.int32)
    len2 = np.where(np.arange(b) % 3 == 0, n // 2, n).astype(np.int32)
    wav2[np.arange(n)[None, :] >= len2[:, None]] = 0.0
    tokens = np.full((b, length), PAD, np.int32)
    tokens[:, 0] = BOS
    for i in range(b):
        words = min(3 + i % 6, length - 2) if caption_words is None else caption_words
        tokens[i, 1 : words + 1] = rng.integers(4, vocab_size, words)
        tokens[i, words + 1] = EOS
    if dtype == "int16":
        wav1, wav2 = np.round(wav1).astype(np.int16), np.round(wav2).astype(np.int16)
    else:
        wav1 = (wav1 / INT16_SCALE).astype(np.float32)
        wav2 = (wav2 / INT16_SCALE).astype(np.float32)
    return {"wav1": wav1, "wav1_len": len1, "wav2": wav2, "wav2_len": len2, "tokens": tokens}
