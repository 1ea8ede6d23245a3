"""Benchmarks the BYOL-A pretraining step (front end, crops, augmentations, online + target
networks, Adam, EMA update, mixup memory).

  python tools/benchmark_pretrain.py --config=configs/byola_pretrain.py[:quick] [--steps=30]
      [--config.train.batch_size=512] [--config.model.dtype=bfloat16] [--peak_tflops=989]

Runs `adc_jax.pretrain.step.jit_pretrain_step` on random waveforms that already live on the
devices (so it measures the step, not the input pipeline), excludes compilation, and times each
step with `block_until_ready`, then a dispatch-pipelined loop. Prints one table and one JSON
line: device kind and count, global batch, median ms/step, clips/s, model FLOPs per clip
(analytic, `pretrain_flops_per_clip`), achieved TFLOP/s and MFU against --peak_tflops (dense peak
per chip, e.g. 989 for an H100/H200 in bfloat16 and 494 in float32 (TF32); without it MFU is not
given).

FLOPs are counted as `adc_jax/flops.py` counts the captioner: 2 per multiply-accumulate of every
matmul and convolution, a backward pass = 2x its forward pass. Per clip: the mel filterbank of
the whole clip (forward only); the encoder (AudioNTT2020 at the segment's pretrain.segment_frames
x n_mels) and the projector MLP for both views in the online network (forward + backward) and in
the target network (forward only); the predictor MLP for both views (forward + backward). The
FFT, BatchNorm, augmentations, the EMA update and Adam are elementwise and left out. XLA's GPU
cost analysis is not used: it omits convolutions run as cuDNN calls. The CPU-compiled step's
cost analysis reports 1.27x this count at :quick (0.161 against 0.126 GFLOP per clip; 1.56x at
:smoke, whose encoder is tiny): it also counts the FFT, the elementwise work and the resampling
of the random resize crop.

Needs only jax, flax, optax, numpy and ml-collections: no tfds, grain, librosa, clu or
pycocoevalcap, so it runs on the GPU image.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from adc_jax import sharding as sharding_lib  # noqa: E402
from adc_jax.models.byola import NUM_BLOCKS  # noqa: E402
from adc_jax.pretrain import config as pretrain_config  # noqa: E402
from adc_jax.pretrain import step as step_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/byola_pretrain.py", "Pretraining config file."
)
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps (>= 20 recommended).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
_PEAK = flags.DEFINE_float("peak_tflops", None, "Dense peak TFLOP/s per chip, for MFU.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Append the JSON result line to this file.")

INT16_FULL_SCALE = 32767


def _encoder_forward_flops(frames: int, n_mels: int, channels: int, dim: int) -> int:
    """AudioNTT2020 on one [frames, n_mels] log-mel: three 3x3 conv blocks + the 2-layer head."""
    flops, c_in, t, f = 0, 1, frames, n_mels
    for _ in range(NUM_BLOCKS):  # conv i runs at (frames / 2^i, n_mels / 2^i)
        flops += 2 * 9 * c_in * channels * t * f
        c_in, t, f = channels, t // 2, f // 2
    return flops + 2 * t * (f * channels * dim + dim * dim)


def _mlp_forward_flops(in_dim: int, hidden: int, out_dim: int) -> int:
    return 2 * (in_dim * hidden + hidden * out_dim)


def pretrain_flops_per_clip(config: ml_collections.ConfigDict) -> dict[str, float]:
    """Training FLOPs of one clip of a pretraining step, by component (see the module docstring).

    Returns:
      dict with "frontend_mel", "encoder", "projector", "predictor" and "total".
    """
    m, p = config.model, config.pretrain
    n_samples = int(round(config.data.clip_seconds * config.data.sample_rate))
    mel_frames = n_samples // m.hop_length + 1
    encoder = _encoder_forward_flops(p.segment_frames, m.n_mels, m.byola_channels, m.byola_dim)
    projector = _mlp_forward_flops(m.byola_dim, m.projector_hidden, m.projector_dim)
    predictor = _mlp_forward_flops(m.projector_dim, m.projector_hidden, m.projector_dim)
    views = 2
    out = {
        "frontend_mel": 2 * mel_frames * (m.n_fft // 2 + 1) * m.n_mels,
        # online: forward + backward (3x); target: forward (1x)
        "encoder": views * (3 + 1) * encoder,
        "projector": views * (3 + 1) * projector,
        "predictor": views * 3 * predictor,
    }
    out = {k: float(v) for k, v in out.items()}
    out["total"] = sum(out.values())
    return out


def random_clips(
    config: ml_collections.ConfigDict, batch_size: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """A host batch in the pipeline's format: {"wav": [B, N] int16, "wav_len": [B] int32}.

    Each clip is a sine tone (200-2000 Hz, random per row) plus noise; every third clip (rows 0,
    3, ...) is half as long, zero after its length, as the pipeline pads a short clip.
    """
    rng = np.random.default_rng(seed)
    n = int(round(config.data.clip_seconds * config.data.sample_rate))
    t = np.arange(n) / config.data.sample_rate
    wav = 3000 * np.sin(2 * np.pi * rng.uniform(200, 2000, (batch_size, 1)) * t)
    wav += 1000 * rng.normal(size=(batch_size, n))
    lengths = np.where(np.arange(batch_size) % 3 == 0, n // 2, n).astype(np.int32)
    wav[np.arange(n)[None, :] >= lengths[:, None]] = 0.0
    wav = np.clip(np.round(wav), -INT16_FULL_SCALE, INT16_FULL_SCALE).astype(np.int16)
    return {"wav": wav, "wav_len": lengths}


def time_steps(step, ts, batch, steps: int, warmup: int) -> tuple[float, list[float], float, dict]:
    """(compile s, per-step s synced, pipelined s per step, last metrics); the state is donated
    and carried from step to step."""
    start = time.perf_counter()
    state, metrics = step(ts.rng_state, ts.state, batch)
    jax.block_until_ready((state, metrics))
    compile_s = time.perf_counter() - start
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        state, metrics = step(ts.rng_state, state, batch)
        jax.block_until_ready((state, metrics))
        if i >= warmup:
            times.append(time.perf_counter() - start)
    # Dispatch-pipelined throughput (no sync between steps), as in the real training loop.
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(ts.rng_state, state, batch)
    jax.block_until_ready((state, metrics))
    pipelined = (time.perf_counter() - start) / steps
    ts.state = state
    return compile_s, times, pipelined, metrics


def run_benchmark(
    config: ml_collections.ConfigDict,
    *,
    steps: int = 30,
    warmup: int = 3,
    peak: float | None = None,
) -> dict:
    """Builds the real pretraining step for `config` and times it; returns the result dict."""
    pretrain_config.validate(config, num_devices=jax.device_count())
    mesh = sharding_lib.create_mesh()
    ts = step_lib.create_pretrain_state(config, mesh)
    b = config.train.batch_size
    batch = sharding_lib.global_batch(random_clips(config, b), mesh)
    step = step_lib.jit_pretrain_step(ts, config, mesh)
    compile_s, times, pipelined_s, metrics = time_steps(step, ts, batch, steps, warmup)
    median_s = statistics.median(times)
    step_s = min(median_s, pipelined_s)
    flops = pretrain_flops_per_clip(config)
    achieved = flops["total"] * b / step_s / 1e12
    return {
        "config": config.name,
        "size": config.size,
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "dtype": config.model.dtype,
        "global_batch": b,
        "clip_seconds": config.data.clip_seconds,
        "segment_frames": config.pretrain.segment_frames,
        "steps": steps,
        "compile_s": round(compile_s, 2),
        "median_ms_per_step": round(1000 * median_s, 3),
        "pipelined_ms_per_step": round(1000 * pipelined_s, 3),
        "clips_per_s": round(b / step_s, 1),
        "gflop_per_clip": round(flops["total"] / 1e9, 4),
        "gflop_per_clip_parts": {k: round(v / 1e9, 4) for k, v in flops.items() if k != "total"},
        "achieved_tflops": round(achieved, 3),
        "peak_tflops": peak,
        "mfu": round(achieved / peak, 4) if peak else None,
        "loss": round(float(metrics["loss"]), 4),
        "params_online": step_lib.parameter_count(ts.state),
        "jax": jax.__version__,
    }


def format_table(result: dict) -> str:
    """The human-readable table of one benchmark result."""
    peak = result["peak_tflops"]
    rows = [
        (
            "device",
            f"{result['device_kind']} x{result['device_count']} "
            f"({result['process_count']} process(es))",
        ),
        ("config", f"{result['config']} ({result['size']}), {result['dtype']}"),
        ("global batch", f"{result['global_batch']} clips of {result['clip_seconds']:g} s"),
        ("compile", f"{result['compile_s']:.1f} s"),
        ("median step (synced)", f"{result['median_ms_per_step']:.2f} ms"),
        ("pipelined step", f"{result['pipelined_ms_per_step']:.2f} ms"),
        ("clips/s", f"{result['clips_per_s']:,.1f}"),
        ("model GFLOP/clip (train)", f"{result['gflop_per_clip']:.3f}"),
        ("achieved TFLOP/s", f"{result['achieved_tflops']:.3f}"),
        (
            "MFU",
            f"{100 * result['mfu']:.1f}% of {peak:g} TFLOP/s" if peak else "n/a (--peak_tflops)",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv):
    del argv
    result = run_benchmark(
        _CONFIG.value, steps=_STEPS.value, warmup=_WARMUP.value, peak=_PEAK.value
    )
    print(format_table(result))
    line = json.dumps(result)
    print(line)
    if _JSON_OUT.value:
        with open(_JSON_OUT.value, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    app.run(main)
