"""Analytic count of model FLOPs per training pair (for throughput and MFU reports).

Counted per layer from the config: 2 FLOPs per multiply-accumulate of every matmul and
convolution (the convention of MFU papers and of PyTorch's FLOP counter), forward pass only;
a training step is counted as 3x the forward pass (backward = 2x forward). Elementwise work,
normalisation, softmax and the FFT are left out (a few percent). XLA's GPU cost analysis is not
used because it omits convolutions that run as cuDNN calls.

At paper scale (10 s clips, vocabulary 1000, 20 target tokens) this gives about 33 GFLOP per pair
per training step, of which the BYOL-A CNN and its MLP head are about 17.
"""

from __future__ import annotations

import ml_collections


def _mel_frames(config: ml_collections.ConfigDict) -> int:
    n_samples = int(round(config.data.clip_seconds * config.data.sample_rate))
    return n_samples // config.model.hop_length + 1


def forward_flops_per_pair(
    config: ml_collections.ConfigDict, vocab_size: int, num_tokens: int | None = None
) -> dict[str, float]:
    """Forward-pass FLOPs of one pair, by component.

    Args:
      config: the run's config.
      vocab_size: size of the output vocabulary.
      num_tokens: decoder positions per caption (default: data.max_caption_tokens - 1).
    Returns:
      dict with "frontend_mel", "cnn", "byola_head", "encoder", "sdd", "decoder", "total".
    """
    m = config.model
    t_mel = _mel_frames(config)
    f = m.n_mels
    c = m.byola_channels
    out = {}
    # Mel filterbank matmul (the FFT itself is not counted): per clip.
    out["frontend_mel"] = 2 * 2 * t_mel * (m.n_fft // 2 + 1) * m.n_mels
    # Three 3x3 conv blocks; conv i runs at resolution (t_mel / 2^i, f / 2^i).
    cnn = 0
    c_in, t, fr = 1, t_mel, f
    for _ in range(3):
        cnn += 2 * 9 * c_in * c * t * fr
        c_in, t, fr = c, t // 2, fr // 2
    out["cnn"] = 2 * cnn
    frames = t  # T = t_mel // 8
    d = m.byola_dim
    out["byola_head"] = 2 * 2 * frames * (fr * c * d + d * d)
    dm, dff = m.d_model, m.d_ff
    seq = 2 * frames
    projection = 2 * seq * d * dm
    per_layer = 2 * seq * (4 * dm * dm + 2 * dm * dff) + 2 * 2 * seq * seq * dm
    out["encoder"] = projection + m.encoder_layers * per_layer
    if m.sdd == "none":
        out["sdd"] = 0
    else:
        u = m.sdd_lstm_units
        # 2 clips x 2 directions; input kernels over the similar + discrepant channels, then
        # the recurrent kernels of the 4 LSTMs.
        out["sdd"] = 2 * (2 * 2 * frames * dm * 4 * u + 2 * 4 * frames * u * 4 * u)
    length = num_tokens if num_tokens is not None else config.data.max_caption_tokens - 1
    self_attn = 2 * length * 4 * dm * dm + 2 * 2 * length * length * dm
    cross_attn = 2 * length * 2 * dm * dm + 2 * seq * 2 * dm * dm + 2 * 2 * length * seq * dm
    ffn = 2 * length * 2 * dm * dff
    out["decoder"] = (
        m.decoder_layers * (self_attn + cross_attn + ffn) + 2 * length * dm * vocab_size
    )
    out = {k: float(v) for k, v in out.items()}
    out["total"] = sum(out.values())
    return out
