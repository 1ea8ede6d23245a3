"""The full audio difference captioning model and its factory.

  waveforms of clip 1 and clip 2 ([B, N] int16 or float)
    -> log-mel front end (float32, on the device)          [B, T_mel, 64]
    -> BYOL-A AudioNTT2020 CNN + MLP head                   [B, T, d]      (T = T_mel // 8)
    -> projection to d_model                                [B, T, D]      <- "early" SDD
    -> difference encoder (CAC or full attention)           [B, 2T, D]     <- "late" SDD
    -> transformer text decoder                             [B, L, V] logits

Both clips go through the front end and the CNN as one batch of 2B clips (one kernel launch each,
better device utilisation); BatchNorm therefore sees the statistics of both clips together.

Shapes: B pairs, N samples, T frames per clip, D d_model, L tokens, V vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from adc_jax.models import frontend
from adc_jax.models.byola import AudioNTT2020
from adc_jax.models.decoder import TextDecoder
from adc_jax.models.encoder import DifferenceEncoder
from adc_jax.models.sdd import SDD

# Full scale of int16 waveforms.
INT16_SCALE = 32767.0


def compute_dtype(name: str):
    """Config dtype name -> jnp dtype."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def valid_frames(wav_len: jax.Array, hop_length: int) -> jax.Array:
    """Number of BYOL-A output frames [B] computed from valid samples only (3 floor-poolings)."""
    mel_frames = wav_len // hop_length + 1
    return jnp.where(wav_len > 0, mel_frames // 8, 0)


class ADCModel(nnx.Module):
    """BYOL-A features -> difference encoder (+ SDD) -> caption decoder."""

    def __init__(
        self,
        *,
        vocab_size: int,
        sample_rate: int,
        n_fft: int,
        win_length: int,
        hop_length: int,
        n_mels: int,
        f_min: float,
        f_max: float,
        norm_mean: float,
        norm_std: float,
        byola_channels: int,
        byola_dim: int,
        byola_dropout: float,
        byola_frozen: bool,
        d_model: int,
        num_heads: int,
        d_ff: int,
        encoder_layers: int,
        decoder_layers: int,
        dropout: float,
        attention: str,
        sdd: str,
        sdd_similar_dim: int,
        sdd_lstm_units: int,
        sdd_temperature: float,
        max_decode_len: int,
        remat_cnn: bool = False,
        byola_first_block: str = "conv",
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if sdd not in ("none", "early", "late"):
            raise ValueError(f"Unknown sdd mode {sdd!r}; use 'none', 'early' or 'late'.")
        self.frontend_args = dict(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            mean=norm_mean,
            std=norm_std,
        )
        self.hop_length = hop_length
        self.sdd_mode = sdd
        self.byola_frozen = byola_frozen
        self.remat_cnn = remat_cnn
        self.byola = AudioNTT2020(
            n_mels=n_mels,
            channels=byola_channels,
            dim=byola_dim,
            dropout=byola_dropout,
            dtype=dtype,
            first_block=byola_first_block,
            rngs=rngs,
        )
        self.encoder = DifferenceEncoder(
            byola_dim,
            d_model,
            num_heads,
            d_ff,
            encoder_layers,
            attention=attention,
            dropout=dropout,
            dtype=dtype,
            rngs=rngs,
        )
        self.sdd = (
            SDD(
                d_model,
                sdd_similar_dim,
                sdd_lstm_units,
                temperature=sdd_temperature,
                dtype=dtype,
                rngs=rngs,
            )
            if sdd != "none"
            else None
        )
        self.decoder = TextDecoder(
            vocab_size,
            d_model,
            num_heads,
            d_ff,
            decoder_layers,
            max_decode_len,
            dropout=dropout,
            dtype=dtype,
            rngs=rngs,
        )

    def log_mel(self, wav: jax.Array) -> jax.Array:
        """Waveforms [B, N] (int16 full scale or float in [-1, 1]) -> log-mel [B, T_mel, M] f32."""
        if jnp.issubdtype(wav.dtype, jnp.integer):
            wav = wav.astype(jnp.float32) / INT16_SCALE
        return frontend.log_mel(wav.astype(jnp.float32), **self.frontend_args)

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


def first_block_impl(setting: str) -> str:
    """`config.model.byola_first_block` -> the implementation used on this backend."""
    if setting == "auto":
        return "phases" if jax.default_backend() == "cpu" else "conv"
    return setting


def create_model(config: ml_collections.ConfigDict, vocab_size: int, rngs: nnx.Rngs) -> ADCModel:
    """Builds the model described by `config.model` (and the data's sample rate)."""
    m = config.model
    return ADCModel(
        vocab_size=vocab_size,
        sample_rate=config.data.sample_rate,
        n_fft=m.n_fft,
        win_length=m.win_length,
        hop_length=m.hop_length,
        n_mels=m.n_mels,
        f_min=m.f_min,
        f_max=m.f_max,
        norm_mean=m.norm_mean,
        norm_std=m.norm_std,
        byola_channels=m.byola_channels,
        byola_dim=m.byola_dim,
        byola_dropout=m.byola_dropout,
        byola_frozen=m.byola_freeze,
        d_model=m.d_model,
        num_heads=m.num_heads,
        d_ff=m.d_ff,
        encoder_layers=m.encoder_layers,
        decoder_layers=m.decoder_layers,
        dropout=m.dropout,
        attention=m.attention,
        sdd=m.sdd,
        sdd_similar_dim=m.sdd_similar_dim,
        sdd_lstm_units=m.sdd_lstm_units,
        sdd_temperature=m.sdd_temperature,
        max_decode_len=m.max_decode_len,
        remat_cnn=m.remat_cnn,
        byola_first_block=first_block_impl(m.byola_first_block),
        dtype=compute_dtype(m.dtype),
        rngs=rngs,
    )
