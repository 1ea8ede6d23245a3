"""Benchmarks the real training step (front end, BYOL-A, encoder, SDD, decoder, AdamW).

  python tools/benchmark_step.py --config=configs/late_sdd.py [--batch_size=128] [--steps=30]
                                 [--dtype=bfloat16] [--breakdown] [--profile=DIR]

Runs on synthetic batches that already live on the devices (so it measures the step, not the
input pipeline), excludes compilation, and times each step with `block_until_ready`. Prints one
table and one JSON line: device kind and count, global batch, median ms/step, pairs/s, model
FLOPs per pair (analytic, `adc_jax.flops`), achieved TFLOP/s and MFU against the device's peak.

`--breakdown` also times, as separate jitted functions with gradients: the front end alone, the
front end + CNN, and the whole loss without the optimizer update, so the table shows where the
step's time goes. `--profile=DIR` writes a JAX profiler trace of a few steps (TensorBoard/XProf).

Needs only jax, flax, optax, numpy and ml-collections (not the data/eval stack).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from adc_jax import config as config_lib  # noqa: E402
from adc_jax import flops as flops_lib  # noqa: E402
from adc_jax import sharding as sharding_lib  # noqa: E402
from adc_jax import step as step_lib  # noqa: E402
from adc_jax.data.random_batch import random_batch  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/late_sdd.py", "Config file.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Global batch (default: the config's).")
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps (>= 20 recommended).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Compute dtype override.")
_VOCAB = flags.DEFINE_integer("vocab_size", 1000, "Vocabulary size of the synthetic task.")
_TOKENS = flags.DEFINE_integer("caption_tokens", 20, "Caption length incl. <bos>/<eos>.")
_PEAK = flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s for MFU (default: known table).")
_BREAKDOWN = flags.DEFINE_bool("breakdown", False, "Also time front end / CNN / loss alone.")
_PROFILE = flags.DEFINE_string("profile", None, "Write a profiler trace of 5 steps here.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Append the JSON result line to this file.")

# Dense peak TFLOP/s per chip by (device-kind substring, dtype). fp32 on NVIDIA GPUs means TF32
# tensor cores, which XLA uses for float32 matmuls and convolutions at default precision.
PEAK_TFLOPS = (
    ("H200", {"bfloat16": 989.0, "float32": 494.0}),
    ("H100", {"bfloat16": 989.0, "float32": 494.0}),
    ("A100", {"bfloat16": 312.0, "float32": 156.0}),
    ("TPU v6", {"bfloat16": 918.0, "float32": 918.0}),
    ("TPU v5p", {"bfloat16": 459.0, "float32": 459.0}),
    ("TPU v5 lite", {"bfloat16": 197.0, "float32": 197.0}),
    ("TPU v5e", {"bfloat16": 197.0, "float32": 197.0}),
    ("TPU v4", {"bfloat16": 275.0, "float32": 275.0}),
)


def peak_tflops(device_kind: str, dtype: str) -> float | None:
    for name, peaks in PEAK_TFLOPS:
        if name.lower() in device_kind.lower():
            return peaks[dtype]
    return None


def synthetic_batch(config, batch_size: int, vocab_size: int, caption_tokens: int, seed: int = 0):
    """`adc_jax.data.random_batch` with captions of `caption_tokens` tokens (<bos>/<eos> included,
    at most data.max_caption_tokens): int16 audio [B, N], lengths [B], tokens [B, L]."""
    words = min(caption_tokens, config.data.max_caption_tokens) - 2
    return random_batch(
        config, vocab_size, batch_size=batch_size, seed=seed, caption_words=max(words, 0)
    )


def time_fn(
    fn, args, steps: int, warmup: int, carry_first: bool = False
) -> tuple[float, list, object]:
    """(compile seconds, per-step seconds, last output).

    With `carry_first`, output[0] is fed back as args[1] (a donated train state).
    """
    args = list(args)
    start = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - start
    times = []
    for i in range(warmup + steps):
        if carry_first:
            args[1] = out[0]
        start = time.perf_counter()
        out = fn(*args)
        jax.block_until_ready(out)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return compile_s, times, out


def breakdown(ts, config, batch, steps: int, warmup: int) -> dict[str, float]:
    """Median ms of: front end (fwd), front end + CNN (fwd+bwd), full loss (fwd+bwd)."""
    graphdef = ts.graphdef
    loss_cfg = step_lib.LossConfig.from_config(config)

    def model_of(rng_state, state):
        return nnx.merge(graphdef, rng_state, state)["model"]

    @jax.jit
    def frontend(rng_state, state, batch):
        m = model_of(rng_state, state)
        wav = jnp.concatenate([batch["wav1"], batch["wav2"]])
        return m.log_mel(wav).sum()

    @jax.jit
    def cnn(rng_state, state, batch):
        m = model_of(rng_state, state)
        logmel = m.log_mel(jnp.concatenate([batch["wav1"], batch["wav2"]]))

        def f(byola):
            return byola(logmel, train=True).astype(jnp.float32).mean()

        return nnx.grad(f)(m.byola)

    @jax.jit
    def loss(rng_state, state, batch):
        m = model_of(rng_state, state)
        return nnx.grad(lambda mm: step_lib.compute_loss(mm, batch, loss_cfg, train=True)[0])(m)

    out = {}
    for name, fn in (
        ("frontend_fwd", frontend),
        ("frontend_cnn_fwd_bwd", cnn),
        ("loss_fwd_bwd", loss),
    ):
        _, times, _ = time_fn(fn, (ts.rng_state, ts.state, batch), steps, warmup)
        out[name] = 1000 * statistics.median(times)
    return out


def run_benchmark(
    config,
    *,
    steps: int = 30,
    warmup: int = 3,
    vocab_size: int = 1000,
    caption_tokens: int = 20,
    peak: float | None = None,
    with_breakdown: bool = False,
    profile_dir: str | None = None,
) -> dict:
    """Builds the real train step for `config` and times it; returns the result dict."""

    config_lib.validate(config, num_devices=jax.device_count())
    mesh = sharding_lib.create_mesh()
    ts = step_lib.create_train_state(config, vocab_size, mesh)
    batch = sharding_lib.global_batch(
        synthetic_batch(config, config.train.batch_size, vocab_size, caption_tokens), mesh
    )
    train_step = step_lib.jit_train_step(ts, config, mesh)

    compile_s, times, (state, _) = time_fn(
        train_step, (ts.rng_state, ts.state, batch), steps, warmup, carry_first=True
    )
    # Dispatch-pipelined throughput (no sync between steps), as in a real training loop.
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = train_step(ts.rng_state, state, batch)
    jax.block_until_ready((state, metrics))
    pipelined_s = (time.perf_counter() - start) / steps
    loss = float(metrics["loss"])
    ts.state = state

    if profile_dir:
        jax.profiler.start_trace(profile_dir)
        for _ in range(5):
            state, metrics = train_step(ts.rng_state, state, batch)
        jax.block_until_ready(metrics)
        jax.profiler.stop_trace()
        ts.state = state

    parts = breakdown(ts, config, batch, max(steps // 2, 5), 2) if with_breakdown else {}

    b = config.train.batch_size
    median_s = statistics.median(times)
    step_s = min(median_s, pipelined_s)
    fwd = flops_lib.forward_flops_per_pair(config, vocab_size, caption_tokens - 1)
    flops_pair = 3 * fwd["total"]
    achieved = flops_pair * b / step_s / 1e12
    kind = jax.devices()[0].device_kind
    peak = peak or peak_tflops(kind, config.model.dtype)
    result = {
        "config": config.name,
        "size": config.size,
        "device_kind": kind,
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "dtype": config.model.dtype,
        "global_batch": b,
        "steps": steps,
        "compile_s": round(compile_s, 2),
        "median_ms_per_step": round(1000 * median_s, 3),
        "pipelined_ms_per_step": round(1000 * pipelined_s, 3),
        "pairs_per_s": round(b / step_s, 1),
        "gflop_per_pair": round(flops_pair / 1e9, 3),
        "gflop_per_pair_cnn": round(3 * (fwd["cnn"] + fwd["byola_head"]) / 1e9, 3),
        "achieved_tflops": round(achieved, 2),
        "peak_tflops": peak,
        "mfu": round(achieved / peak, 4) if peak else None,
        "loss": round(loss, 4),
        "params": step_lib.parameter_count(ts.state),
        "jax": jax.__version__,
    }
    if parts:
        result["breakdown_ms"] = {k: round(v, 3) for k, v in parts.items()}
        result["breakdown_ms"]["optimizer_and_rest"] = round(
            1000 * median_s - parts["loss_fwd_bwd"], 3
        )
    return result


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
        ("global batch", str(result["global_batch"])),
        ("compile", f"{result['compile_s']:.1f} s"),
        ("median step (synced)", f"{result['median_ms_per_step']:.2f} ms"),
        ("pipelined step", f"{result['pipelined_ms_per_step']:.2f} ms"),
        ("pairs/s", f"{result['pairs_per_s']:,.0f}"),
        ("model GFLOP/pair (train)", f"{result['gflop_per_pair']:.2f}"),
        ("achieved TFLOP/s", f"{result['achieved_tflops']:.2f}"),
        ("MFU", f"{100 * result['mfu']:.1f}% of {peak:g} TFLOP/s" if peak else "n/a (no peak)"),
    ]
    for k, v in result.get("breakdown_ms", {}).items():
        rows.append((f"  {k}", f"{v:.2f} ms"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv):
    del argv
    config = _CONFIG.value
    if _BATCH.value:
        config.train.batch_size = _BATCH.value
    if _DTYPE.value:
        config.model.dtype = _DTYPE.value
    result = run_benchmark(
        config,
        steps=_STEPS.value,
        warmup=_WARMUP.value,
        vocab_size=_VOCAB.value,
        caption_tokens=_TOKENS.value,
        peak=_PEAK.value,
        with_breakdown=_BREAKDOWN.value,
        profile_dir=_PROFILE.value,
    )
    print(format_table(result))
    line = json.dumps(result)
    print(line)
    if _JSON_OUT.value:
        with open(_JSON_OUT.value, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    app.run(main)
