"""Command line: caption the difference between two audio files with a trained run.

  python -m adc_jax.caption --workdir=DIR a.wav b.wav [--beam_size=4] [--nbest=3]
                            [--attention_png=out.png] [--checkpoint_step=N]

The model is rebuilt from DIR/config.json and restored from its latest checkpoint (or
--checkpoint_step). Any file libsndfile reads works, at any sample rate and channel count: it is
mixed down to mono, resampled to the training rate and padded (or cropped, with a warning) to the
training clip length, exactly as the training data was. A truncated file (less audio than its
header promises: a partial download) is used as it is, with a warning, as the builders do. The n-best captions of beam search are
printed with their scores: the log-probability of the caption divided by the GNMT length penalty
((5 + length) / 6) ** eval.length_penalty, so higher is better and 0 is the maximum.

--attention_png draws each encoder layer's head-averaged attention between the two clips' frames
over their log-mel spectrograms (see `adc_jax.plotting.plot_attention`).

Errors (a missing or unreadable file, a workdir without config or checkpoint) print one line
naming the file or workdir and exit with status 1; bad arguments exit with status 2.

From Python (notebooks):
  captioner = Captioner.from_workdir("workdirs/late_sdd_quick")
  captioner.caption_files("a.wav", "b.wav", beam_size=4, nbest=3)   # [(caption, score), ...]
  captioner.attention_png("a.wav", "b.wav", "attention.png")
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from adc_jax import rundir
from adc_jax import sharding as sharding_lib
from adc_jax import step as step_lib
from adc_jax.checkpointing import CheckpointError
from adc_jax.config import ConfigError, min_clip_samples
from adc_jax.data.audio_io import AudioError, load_audio, probe_audio
from adc_jax.data.paths import RemotePathError
from adc_jax.data.pipeline import clip_samples
from adc_jax.data.vocab import split_tiers
from adc_jax.data.waveform import fit_length
from adc_jax.plotting import plot_attention

# Shown instead of a caption with no words (the model emitted <eos> at once).
EMPTY_CAPTION = "(empty caption)"


class CaptionError(ValueError):
    """A clip or an argument cannot be captioned; the message says which and why."""


class CropWarning(UserWarning):
    """A clip was longer than the training clip length and its end was cut off."""


class TruncationWarning(UserWarning):
    """A file holds less audio than its header promises (a partial download or copy)."""


@dataclasses.dataclass
class Clip:
    """One audio file prepared for the model.

    wav: [N] float32 in [-1, 1] at the model's sample rate, padded/cropped to the clip length N.
    num_valid: number of real (not padding) samples at the start of `wav`.
    seconds: duration of the file after resampling, in seconds.
    cropped: True when the file was longer than the clip length and its end was dropped.
    """

    path: str
    wav: np.ndarray
    num_valid: int
    seconds: float
    cropped: bool
    sample_rate: int
    # The duration the file's header promises when it holds less (a truncated file), else None.
    header_seconds: float | None = None

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def truncation_message(self) -> str | None:
        """What a truncated file lacks, as the dataset builders warn; None when it is whole."""
        if self.header_seconds is None:
            return None
        return (
            f"{self.path} is truncated: it holds {self.seconds:.2f} s of the "
            f"{self.header_seconds:.2f} s its header promises (a partial download or copy?); "
            "the caption describes only what is there. Replace it with the complete file."
        )

    def crop_message(self) -> str:
        used = self.wav.shape[0] / self.sample_rate
        return (
            f"{self.path} is {self.seconds:.2f} s long but the model was trained on "
            f"{used:.2f} s clips: only its first {used:.2f} s are used."
        )


def prepare_clip(path: str, sample_rate: int, n_samples: int, min_samples: int = 1) -> Clip:
    """Reads `path` as a mono float32 waveform at `sample_rate`, padded/cropped to `n_samples`.

    Raises:
      AudioError: the file is missing, empty or unreadable.
      CaptionError: the file is shorter than `min_samples` (no encoder frame would be valid).
    """
    probe = probe_audio(path)
    wav = load_audio(path, sample_rate)
    if wav.shape[0] < min_samples:
        raise CaptionError(
            f"Audio file {path!r} is {wav.shape[0] / sample_rate:.3f} s long; at "
            f"least {min_samples / sample_rate:.3f} s are needed."
        )
    fitted, num_valid, cropped = fit_length(wav, n_samples)
    header_seconds = probe.header_seconds if probe.truncated else None
    return Clip(
        path, fitted, num_valid, wav.shape[0] / sample_rate, cropped, sample_rate, header_seconds
    )


@dataclasses.dataclass
class AttentionMaps:
    """What `Captioner.attention` returns for one pair.

    attention: [layers, 2T, 2T] float32 head-averaged encoder attention (clip 1's T frames, then
      clip 2's; rows are queries).
    mel1, mel2: [T_mel, M] float32 normalised log-mel spectrograms (the model's input).
    frames1, frames2: valid encoder frames of each clip.
    frame_seconds, mel_seconds: duration of one encoder frame and of one log-mel frame.
    """

    attention: np.ndarray
    mel1: np.ndarray
    mel2: np.ndarray
    frames1: int
    frames2: int
    frame_seconds: float
    mel_seconds: float


def _encode_for_plot(graphdef, rng_state, state, batch: dict[str, Any]) -> dict[str, Any]:
    """Head-averaged encoder attention [B, layers, 2T, 2T], log-mels and frame validity."""
    model = nnx.merge(graphdef, rng_state, state)["model"]
    enc = model.encode(
        batch["wav1"], batch["wav1_len"], batch["wav2"], batch["wav2_len"], train=False
    )
    attention = jnp.stack([w.astype(jnp.float32).mean(axis=1) for w in enc["attention"]], axis=1)
    return {
        "attention": attention,
        "mel1": model.log_mel(batch["wav1"]),
        "mel2": model.log_mel(batch["wav2"]),
        "valid": enc["memory_valid"],
    }


class Captioner:
    """A trained run ready to caption pairs of clips (decoders are compiled once per setting)."""

    def __init__(self, run: rundir.TrainedRun):
        """`run`: a restored checkpoint (see `from_workdir`)."""
        self.run = run
        self.config = run.config
        self.sample_rate = int(self.config.data.sample_rate)
        self.n_samples = clip_samples(self.config)
        self.min_samples = min_clip_samples(self.config)
        self._decoders: dict[tuple[int, float], Any] = {}

    @classmethod
    def from_workdir(cls, workdir: str, step: int | None = None) -> Captioner:
        """Restores checkpoint `step` (default: the latest) of the run in `workdir`.

        Raises:
          FileNotFoundError: no config, vocabulary or checkpoint in `workdir`.
        """
        return cls(rundir.load_trained(workdir, step))

    @property
    def clip_seconds(self) -> float:
        return self.n_samples / self.sample_rate

    def prepare(self, path: str) -> Clip:
        """Reads a file for this model; warns (CropWarning) when its end is cut off and
        (TruncationWarning) when it holds less than its header promises."""
        clip = prepare_clip(path, self.sample_rate, self.n_samples, self.min_samples)
        if clip.truncation_message():
            warnings.warn(clip.truncation_message(), TruncationWarning, stacklevel=2)
        if clip.cropped:
            warnings.warn(clip.crop_message(), CropWarning, stacklevel=2)
        return clip

    def _as_clip(self, clip: Clip | str | np.ndarray) -> Clip:
        if isinstance(clip, Clip):
            return clip
        if isinstance(clip, str):
            return self.prepare(clip)
        wav = np.asarray(clip, np.float32).reshape(-1)
        fitted, num_valid, cropped = fit_length(wav, self.n_samples)
        return Clip(
            "<array>", fitted, num_valid, wav.shape[0] / self.sample_rate, cropped, self.sample_rate
        )

    @property
    def tiers(self) -> tuple[int, ...]:
        """The tiers the run was trained on ((0,) for untiered data; ADIFF: e.g. (1, 2, 3))."""
        return split_tiers(self.config)

    def _start_token(self, tier: int | None) -> int:
        """The decoder's first token for `tier` (None: the run's only or first tier)."""
        tiers = self.tiers
        if tier is None:
            tier = tiers[0]
        if tier not in tiers:
            trained = (
                "none (this run has no tiers)" if tiers == (0,) else ", ".join(map(str, tiers))
            )
            raise CaptionError(f"tier {tier} was not trained; this run's tiers: {trained}.")
        return self.run.vocab.start_id(tier)

    def _batch(self, clip1: Clip, clip2: Clip, tier: int | None = None) -> dict[str, Any]:
        """The pair as a global batch, repeated to fill every device (row 0 is the pair)."""
        rows = jax.device_count()
        local = {
            "wav1": np.repeat(clip1.wav[None], rows, 0).astype(np.float32),
            "wav1_len": np.full((rows,), clip1.num_valid, np.int32),
            "wav2": np.repeat(clip2.wav[None], rows, 0).astype(np.float32),
            "wav2_len": np.full((rows,), clip2.num_valid, np.int32),
            "start": np.full((rows,), self._start_token(tier), np.int32),
        }
        return sharding_lib.global_batch(local, self.run.mesh)

    def _decoder(self, beam_size: int, length_penalty: float):
        key = (beam_size, length_penalty)
        if key not in self._decoders:
            self._decoders[key] = step_lib.jit_decode(
                self.run.train_state, self.run.mesh, "beam", beam_size, length_penalty
            )
        return self._decoders[key]

    def caption(
        self,
        clip1: Clip | str | np.ndarray,
        clip2: Clip | str | np.ndarray,
        *,
        beam_size: int = 4,
        nbest: int = 3,
        length_penalty: float | None = None,
        tier: int | None = None,
    ) -> list[tuple[str, float]]:
        """The `nbest` best captions of beam search for the pair, best first, with their scores.

        Args:
          clip1, clip2: a `Clip`, a file path, or a float waveform at the model's sample rate.
          beam_size: beams kept by the search (>= 1).
          nbest: captions returned, 1 <= nbest <= beam_size.
          length_penalty: GNMT alpha (default: the run's eval.length_penalty).
          tier: ADIFF runs: the explanation tier (1 few words, 2 a sentence, 3 in detail) the
            decoder starts from (default: the run's first tier); must be one it was trained on.
        """
        if beam_size < 1:
            raise CaptionError(f"beam_size must be >= 1, got {beam_size}.")
        if not 1 <= nbest <= beam_size:
            raise CaptionError(
                f"nbest must be between 1 and beam_size={beam_size}, got {nbest} "
                "(beam search keeps beam_size hypotheses)."
            )
        lp = self.config.eval.length_penalty if length_penalty is None else length_penalty
        ts = self.run.train_state
        tokens, scores = self._decoder(beam_size, float(lp))(
            ts.rng_state, ts.state, self._batch(self._as_clip(clip1), self._as_clip(clip2), tier)
        )
        tokens, scores = np.asarray(jax.device_get(tokens)), np.asarray(jax.device_get(scores))
        return [(self.run.vocab.decode(tokens[0, k]), float(scores[0, k])) for k in range(nbest)]

    def caption_files(self, path1: str, path2: str, **kwargs: Any) -> list[tuple[str, float]]:
        """`caption` of two audio files (keyword arguments as for `caption`)."""
        return self.caption(self.prepare(path1), self.prepare(path2), **kwargs)

    @functools.cached_property
    def _encode_fn(self):
        return jax.jit(functools.partial(_encode_for_plot, self.run.train_state.graphdef))

    def attention(
        self, clip1: Clip | str | np.ndarray, clip2: Clip | str | np.ndarray
    ) -> AttentionMaps:
        """The encoder's head-averaged attention and the log-mels of the pair."""
        ts = self.run.train_state
        out = jax.device_get(
            self._encode_fn(
                ts.rng_state, ts.state, self._batch(self._as_clip(clip1), self._as_clip(clip2))
            )
        )
        valid = np.asarray(out["valid"][0])
        t = valid.shape[0] // 2
        hop = int(self.config.model.hop_length)
        return AttentionMaps(
            attention=np.asarray(out["attention"][0], np.float32),
            mel1=np.asarray(out["mel1"][0], np.float32),
            mel2=np.asarray(out["mel2"][0], np.float32),
            frames1=int(valid[:t].sum()),
            frames2=int(valid[t:].sum()),
            frame_seconds=8 * hop / self.sample_rate,
            mel_seconds=hop / self.sample_rate,
        )

    def attention_png(
        self,
        clip1: Clip | str | np.ndarray,
        clip2: Clip | str | np.ndarray,
        path: str,
        caption: str | None = None,
    ) -> str:
        """Writes the attention figure of the pair to `path` (titled by `caption`, or the best
        beam-search caption when None); returns `path`."""
        clip1, clip2 = self._as_clip(clip1), self._as_clip(clip2)
        if caption is None:
            beam = min(4, max(1, int(self.config.eval.beam_size)))
            caption = self.caption(clip1, clip2, beam_size=beam, nbest=1)[0][0]
        maps = self.attention(clip1, clip2)
        return plot_attention(
            maps.attention,
            maps.mel1,
            maps.mel2,
            frames1=maps.frames1,
            frames2=maps.frames2,
            frame_seconds=maps.frame_seconds,
            mel_seconds=maps.mel_seconds,
            path=path,
            caption=caption,
            names=(clip1.name, clip2.name),
        )


# ------------------------------------------------------------------------------------ command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m adc_jax.caption",
        description="Caption the difference between two audio files with a trained run.",
    )
    parser.add_argument("audio1", help="first clip (any format libsndfile reads)")
    parser.add_argument("audio2", help="second clip")
    parser.add_argument("--workdir", required=True, help="workdir of a training run")
    parser.add_argument("--beam_size", type=int, default=4, help="beam size (default 4)")
    parser.add_argument(
        "--nbest",
        type=int,
        default=None,
        help="captions to print, <= beam_size (default min(3, beam_size))",
    )
    parser.add_argument(
        "--length_penalty",
        type=float,
        default=None,
        help="GNMT length penalty alpha (default: the run's)",
    )
    parser.add_argument(
        "--tier",
        type=int,
        default=None,
        help="ADIFF runs: explanation tier 1 (few words), 2 (a sentence) or 3 (in detail); "
        "default: the run's first tier",
    )
    parser.add_argument(
        "--checkpoint_step", type=int, default=None, help="checkpoint to use (default: the latest)"
    )
    parser.add_argument(
        "--attention_png", default=None, help="write the encoder attention figure to this PNG"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 1 file/workdir error, 2 usage)."""
    args = _parser().parse_args(argv)
    nbest = args.nbest if args.nbest is not None else min(3, args.beam_size)
    if args.beam_size < 1 or not 1 <= nbest <= args.beam_size:
        print(
            f"Error: need 1 <= --nbest <= --beam_size, got --nbest={nbest} "
            f"--beam_size={args.beam_size}.",
            file=sys.stderr,
        )
        return 2

    try:
        # The saved config gives the sample rate and clip length: read the audio before the slow
        # model restore, so a wrong file name fails at once.
        config = rundir.read_config(os.path.abspath(os.path.expanduser(args.workdir)))
        clips = [
            prepare_clip(
                p, int(config.data.sample_rate), clip_samples(config), min_clip_samples(config)
            )
            for p in (args.audio1, args.audio2)
        ]
        for clip in clips:
            if clip.truncation_message():
                print(f"Warning: {clip.truncation_message()}", file=sys.stderr)
            if clip.cropped:
                print(f"Warning: {clip.crop_message()}", file=sys.stderr)
        captioner = Captioner.from_workdir(args.workdir, args.checkpoint_step)
        results = captioner.caption(
            *clips,
            beam_size=args.beam_size,
            nbest=nbest,
            length_penalty=args.length_penalty,
            tier=args.tier,
        )
    except (
        AudioError,
        CaptionError,
        FileNotFoundError,
        ConfigError,
        CheckpointError,
        RemotePathError,
    ) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    run = captioner.run
    print(
        f"{clips[0].path} -> {clips[1].path}  ({run.config.name}, step {run.step}, "
        f"beam size {args.beam_size}):"
    )
    shown = [(text or EMPTY_CAPTION, score) for text, score in results]
    width = min(max(len(c) for c, _ in shown), 80)
    for i, (text, score) in enumerate(shown, 1):
        print(f"  {i}. {text:<{width}}  score {score:.3f}")
    if args.attention_png:
        path = captioner.attention_png(*clips, args.attention_png, caption=shown[0][0])
        print(f"Attention map written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
