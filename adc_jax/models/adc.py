"""The full audio difference captioning model and its factory.

  waveforms of clip 1 and clip 2 ([B, N] int16 or float)
    -> log-mel front end (float32, on the device)          [B, T_mel, 64]
    -> BYOL-A AudioNTT2020 CNN + MLP head                   [B, T, d]      (T = T_mel // 8)
    -> projection to d_model                                [B, T, D]      <- "early" SDD
    -> difference encoder (CAC or full attention)           [B, 2T, D]     <- "late" SDD
    -> transformer text decoder                             [B, L, V] logits
       (or, with config.model.lm_path, a pretrained GPT-2: `lm_decoder.LMDecoder`)

Both clips go through the front end and the CNN as one batch of 2B clips (one kernel launch each,
better device utilisation); BatchNorm therefore sees the statistics of both clips together.

Shapes: B pairs, N samples, T frames per clip, D d_model, L tokens, V vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from adc_jax.config import SDD_MODES
from adc_jax.models import frontend
from adc_jax.models.byola import AudioNTT2020, encoder_from_config
from adc_jax.models.decoder import TextDecoder
from adc_jax.models.encoder import DifferenceEncoder
from adc_jax.models.layers import compute_dtype
from adc_jax.models.lm_decoder import LMDecoder, lm_decoder_from_config
from adc_jax.models.sdd import SDD


def valid_frames(wav_len: jax.Array, hop_length: int) -> jax.Array:
    """Number of BYOL-A output frames [B] computed from valid samples only (3 floor-poolings)."""
    mel_frames = wav_len // hop_length + 1
    return jnp.where(wav_len > 0, mel_frames // 8, 0)


class ADCModel(nnx.Module):
    """BYOL-A features -> difference encoder (+ SDD) -> caption decoder.

    Built from its parts by `create_model`; each part takes the config values it needs.

    Args:
      log_mel: the front end's settings (normalisation included).
      byola: the AudioNTT2020 encoder of both clips.
      encoder: the difference encoder (its input projection, CAC or full attention).
      sdd: the SDD module, or None when `sdd_mode` is "none".
      decoder: the caption decoder.
      sdd_mode: "none", "early" (SDD on the encoder input) or "late" (on its output).
      byola_frozen: BYOL-A runs in inference mode and no gradient reaches it.
      remat_cnn: recompute the CNN's activations in the backward pass (saves memory).
    """

    def __init__(
        self,
        *,
        log_mel: frontend.LogMelSettings,
        byola: AudioNTT2020,
        encoder: DifferenceEncoder,
        sdd: SDD | None,
        decoder: TextDecoder | LMDecoder,
        sdd_mode: str,
        byola_frozen: bool = False,
        remat_cnn: bool = False,
    ):
        if sdd_mode not in SDD_MODES:
            raise ValueError(f"Unknown sdd mode {sdd_mode!r}; use 'none', 'early' or 'late'.")
        if (sdd is None) != (sdd_mode == "none"):
            raise ValueError(f"sdd_mode={sdd_mode!r} needs an SDD module exactly when not 'none'.")
        self.log_mel_settings = log_mel
        self.hop_length = log_mel.hop_length
        self.sdd_mode = sdd_mode
        self.byola_frozen = byola_frozen
        self.remat_cnn = remat_cnn
        self.byola = byola
        self.encoder = encoder
        self.sdd = sdd
        self.decoder = decoder

    def log_mel(self, wav: jax.Array) -> jax.Array:
        """Waveforms [B, N] (int16 full scale or float in [-1, 1]) -> log-mel [B, T_mel, M] f32."""
        return self.log_mel_settings(frontend.float_waveform(wav))

    def clip_features(
        self, wav: jax.Array, wav_len: jax.Array, *, train: bool
    ) -> tuple[jax.Array, jax.Array]:
        """Waveforms [B, N], valid sample counts [B] -> frame features [B, T, d], valid [B, T].

        Samples from `wav_len` on are set to zero first (the pipeline pads with zeros already):
        the last valid frames see a few hops past the clip's end (centred STFT, 3x3 convs), so
        whatever lies there must not reach the loss.
        """
        wav = jnp.where(jnp.arange(wav.shape[1])[None, :] < wav_len[:, None], wav, 0)
        byola_train = train and not self.byola_frozen
        if self.remat_cnn:
            features = nnx.remat(lambda m, x: m(x, train=byola_train))(
                self.byola, self.log_mel(wav)
            )
        else:
            features = self.byola(self.log_mel(wav), train=byola_train)
        if self.byola_frozen:
            features = jax.lax.stop_gradient(features)
        n_valid = valid_frames(wav_len, self.hop_length)
        valid = jnp.arange(features.shape[1])[None, :] < n_valid[:, None]
        return features, valid

    def encode(
        self, wav1: jax.Array, len1: jax.Array, wav2: jax.Array, len2: jax.Array, *, train: bool
    ) -> dict[str, jax.Array | list]:
        """Encodes a batch of pairs.

        Args:
          wav1, wav2: [B, N] waveforms; len1, len2: [B] int valid samples.
        Returns:
          dict with "memory" [B, 2T, D], "memory_valid" [B, 2T] bool, "attention" (per layer
          [B, H, 2T, 2T]), and, when SDD is on, "similar_loss" and "discrepant_loss" scalars.
        """
        batch = wav1.shape[0]
        features, valid = self.clip_features(
            jnp.concatenate([wav1, wav2], axis=0),
            jnp.concatenate([len1, len2], axis=0),
            train=train,
        )
        projected = self.encoder.project(features)
        p1, p2 = projected[:batch], projected[batch:]
        v1, v2 = valid[:batch], valid[batch:]
        out: dict[str, jax.Array | list] = {}
        if self.sdd_mode == "early":
            out.update(self.sdd(p1, v1, p2, v2))
        memory, memory_valid, attention = self.encoder(p1, v1, p2, v2, train=train)
        if self.sdd_mode == "late":
            frames = p1.shape[1]
            out.update(self.sdd(memory[:, :frames], v1, memory[:, frames:], v2))
        out.update(memory=memory, memory_valid=memory_valid, attention=attention)
        return out

    def __call__(
        self,
        wav1: jax.Array,
        len1: jax.Array,
        wav2: jax.Array,
        len2: jax.Array,
        tokens: jax.Array,
        *,
        train: bool,
    ) -> dict[str, jax.Array | list]:
        """Teacher-forced forward pass: `encode` outputs plus "logits" [B, L, V] float32.

        tokens: [B, L] decoder inputs (<bos> w1 w2 ...).
        """
        out = self.encode(wav1, len1, wav2, len2, train=train)
        out["logits"] = self.decoder(tokens, out["memory"], out["memory_valid"], train=train)
        return out


def create_model(config: ml_collections.ConfigDict, vocab_size: int, rngs: nnx.Rngs) -> ADCModel:
    """Builds the model described by `config.model` (and the data's sample rate).

    The parts are built in a fixed order (BYOL-A, difference encoder, SDD, decoder), each drawing
    its initial parameters from `rngs` in turn, so a seed always gives the same model.
    """
    m = config.model
    dtype = compute_dtype(m.dtype)
    byola = encoder_from_config(m, rngs=rngs)
    encoder = DifferenceEncoder(
        m.byola_dim,
        m.d_model,
        m.num_heads,
        m.d_ff,
        m.encoder_layers,
        attention=m.attention,
        dropout=m.dropout,
        dtype=dtype,
        rngs=rngs,
    )
    sdd = None
    if m.sdd != "none":
        sdd = SDD(
            m.d_model,
            m.sdd_similar_dim,
            m.sdd_lstm_units,
            temperature=m.sdd_temperature,
            dtype=dtype,
            rngs=rngs,
        )
    if m.get("lm_path"):  # a pretrained GPT-2 writes the captions (weights: step.py loads them)
        decoder = lm_decoder_from_config(config, vocab_size, dtype=dtype, rngs=rngs)
        return _adc_model(config, byola, encoder, sdd, decoder)
    decoder = TextDecoder(
        vocab_size,
        m.d_model,
        m.num_heads,
        m.d_ff,
        m.decoder_layers,
        m.max_decode_len,
        dropout=m.dropout,
        dtype=dtype,
        rngs=rngs,
    )
    return _adc_model(config, byola, encoder, sdd, decoder)


def _adc_model(config, byola, encoder, sdd, decoder) -> ADCModel:
    m = config.model
    return ADCModel(
        log_mel=frontend.LogMelSettings.from_config(config),
        byola=byola,
        encoder=encoder,
        sdd=sdd,
        decoder=decoder,
        sdd_mode=m.sdd,
        byola_frozen=m.byola_freeze,
        remat_cnn=m.remat_cnn,
    )
