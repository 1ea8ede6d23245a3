"""GPU check: correctness against the CPU, then the step benchmark at paper scale.

  python tools/gpu_check.py [--quick] [--extra] [--json_out=FILE]

1. Correctness: the paper-scale late-SDD model, initialised identically on the CPU and the GPU,
   computes the loss terms of one batch of 8 pairs (eval mode, so no dropout or batch-statistics
   differences) on both backends; printed with their relative difference, once at XLA's default
   GPU precision (TF32 matmuls/convolutions) and once at "highest" (true float32).
2. Benchmark: `tools/benchmark_step.py`'s measurement for float32 and bfloat16 at global batch 32
   and 128, BYOL-A block 1 as a direct convolution and as a phase matmul, and bfloat16 at 128
   with dropout from 16-bit draws (the CPU default), then one table.
3. GPT-2 124M (random weights) as the decoder, bfloat16: prefix conditioning at batch 32 and 128,
   cross-attention at 128 (no FLOP count: benchmark_step counts the word decoder's FLOPs).
With `--extra`: also bfloat16 at batch 256, and a time breakdown (front end / CNN / loss /
optimizer) at bfloat16, batch 128.

Needs only jax (with a GPU backend), flax, optax, numpy and ml-collections.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
from benchmark_step import format_table, run_benchmark, synthetic_batch  # noqa: E402
from flax import nnx  # noqa: E402

from adc_jax import sharding as sharding_lib  # noqa: E402
from adc_jax import step as step_lib  # noqa: E402
from adc_jax.config import base_config as paper_base  # noqa: E402
from adc_jax.models.layers import DROPOUT_BITS_ENV  # noqa: E402


def _loss_terms(config, vocab_size: int, batch, device) -> dict[str, float]:
    mesh = sharding_lib.create_mesh([device])
    ts = step_lib.create_train_state(config, vocab_size, mesh)
    loss_cfg = step_lib.LossConfig.from_config(config)

    @jax.jit
    def terms(rng_state, state, batch):
        model = nnx.merge(ts.graphdef, rng_state, state)["model"]
        return step_lib.compute_loss(model, batch, loss_cfg, train=False)[1]

    placed = sharding_lib.global_batch(batch, mesh)
    return {k: float(v) for k, v in jax.device_get(terms(ts.rng_state, ts.state, placed)).items()}


def correctness(base_config) -> list[str]:
    config = base_config()
    config.train.batch_size = 8
    vocab = 1000
    batch = synthetic_batch(config, 8, vocab, 20, seed=1)
    cpu = _loss_terms(config, vocab, batch, jax.devices("cpu")[0])
    lines = ["GPU vs CPU, paper-scale late_sdd, float32, 8 pairs, eval mode:"]
    for precision in ("default", "highest"):
        with jax.default_matmul_precision(precision):
            gpu = _loss_terms(config, vocab, batch, jax.devices()[0])
        for k in ("loss", "caption_loss", "similar_loss", "discrepant_loss"):
            rel = abs(gpu[k] - cpu[k]) / max(abs(cpu[k]), 1e-12)
            lines.append(
                f"  [{precision:>7}] {k:<16} cpu {cpu[k]: .6f}  gpu {gpu[k]: .6f}  "
                f"rel.diff {rel:.2e}"
            )
    return lines


def _report(result: dict, json_out: str | None) -> None:
    """Prints a benchmark result as one JSON line and appends it to json_out if given."""
    print(json.dumps(result), flush=True)
    if json_out:
        with open(json_out, "a") as f:
            f.write(json.dumps(result) + "\n")


GPT2_VOCAB = 50257


def gpt2_config(config, conditioning: str) -> None:
    """Sets `config` to caption with a randomly initialised GPT-2 124M (`gpt2`'s config.json),
    written to a temporary directory: config.json, an empty model.safetensors (not read with
    model.lm_weights=False) and a tokenizer.json holding only <|endoftext|> (only its size is
    read when the run has no tiers)."""
    directory = tempfile.mkdtemp(prefix="gpt2_124m_")
    arch = {
        "model_type": "gpt2",
        "vocab_size": GPT2_VOCAB,
        "n_positions": 1024,
        "n_embd": 768,
        "n_layer": 12,
        "n_head": 12,
        "n_inner": None,
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": GPT2_VOCAB - 1,
        "eos_token_id": GPT2_VOCAB - 1,
    }
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(arch, f)
    with open(os.path.join(directory, "tokenizer.json"), "w") as f:
        json.dump({"model": {"vocab": {"<|endoftext|>": GPT2_VOCAB - 1}}, "added_tokens": []}, f)
    open(os.path.join(directory, "model.safetensors"), "wb").close()
    config.name = f"late_sdd_gpt2_{conditioning}"
    config.model.lm_path = directory
    config.model.lm_weights = False
    config.model.lm_conditioning = conditioning
    config.data.max_caption_tokens = config.model.max_decode_len = 48


def main() -> int:
    quick = "--quick" in sys.argv
    extra = "--extra" in sys.argv
    json_out = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--json_out=")), None)
    print(f"jax {jax.__version__}; devices: {jax.devices()}", flush=True)

    def late_sdd():
        c = paper_base("paper")
        c.name = "late_sdd"
        return c

    start = time.time()
    try:
        print("\n".join(correctness(late_sdd)), flush=True)
    except Exception:  # noqa: BLE001 - keep going to the benchmark
        traceback.print_exc()
    print(f"[correctness took {time.time() - start:.0f} s]", flush=True)

    # (dtype, global batch, BYOL-A block 1): the "phases" rows decide whether block 1 as a
    # phase matmul (measured faster on CPU) should become the GPU default too.
    runs = [
        ("float32", 32, "conv"),
        ("float32", 128, "conv"),
        ("float32", 128, "phases"),
        ("bfloat16", 32, "conv"),
        ("bfloat16", 128, "conv"),
        ("bfloat16", 128, "phases"),
    ]
    if extra:
        runs += [("bfloat16", 256, "conv"), ("bfloat16", 256, "phases")]
    results = []
    for dtype, batch, first_block in runs:
        config = late_sdd()
        config.model.dtype = dtype
        config.train.batch_size = batch
        config.model.byola_first_block = first_block
        try:
            r = run_benchmark(config, steps=10 if quick else 20, warmup=2)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            continue
        r["byola_first_block"] = first_block
        results.append(r)
        _report(r, json_out)
    # Dropout from 16-bit draws (the CPU default, `layers.dropout_draw_bits`) against the
    # accelerator default of 32 measured above: decides whether GPUs should draw 16 too.
    config = late_sdd()
    config.model.dtype = "bfloat16"
    config.train.batch_size = 128
    os.environ[DROPOUT_BITS_ENV] = "16"
    try:
        r = run_benchmark(config, steps=10 if quick else 20, warmup=2)
        r["byola_first_block"] = "conv, dropout 16-bit"
        results.append(r)
        _report(r, json_out)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
    finally:
        del os.environ[DROPOUT_BITS_ENV]
    # GPT-2 124M as the decoder (configs/late_sdd_gpt2.py at paper size, random weights of the
    # real architecture: the GPU image has no internet and no `tokenizers`, neither is needed).
    for conditioning, batch in (("prefix", 32), ("prefix", 128), ("cross", 128)):
        config = late_sdd()
        gpt2_config(config, conditioning)
        config.model.dtype = "bfloat16"
        config.train.batch_size = batch
        try:
            r = run_benchmark(
                config, steps=10 if quick else 20, warmup=2, vocab_size=GPT2_VOCAB + 4
            )
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            continue
        # benchmark_step's FLOP count is the word decoder's: no TFLOP/s or MFU for these rows.
        r.update(byola_first_block=f"GPT-2 124M {conditioning}", achieved_tflops=float("nan"))
        r["mfu"] = None
        results.append(r)
        _report(r, json_out)
    if extra:
        config = late_sdd()
        config.model.dtype = "bfloat16"
        config.train.batch_size = 128
        try:
            r = run_benchmark(config, steps=10, warmup=2, with_breakdown=True)
            print(format_table(r), flush=True)
            _report(r, json_out)
        except Exception:  # noqa: BLE001
            traceback.print_exc()

    print("\n| dtype | batch | block 1 | ms/step | pairs/s | TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "n/a"
        print(
            f"| {r['dtype']} | {r['global_batch']} | {r['byola_first_block']} | "
            f"{min(r['median_ms_per_step'], r['pipelined_ms_per_step']):.2f} | "
            f"{r['pairs_per_s']:,.0f} | {r['achieved_tflops']:.1f} | {mfu} |"
        )
    if results:
        r = results[0]
        print(
            f"device: {r['device_kind']}; model {r['gflop_per_pair']:.1f} GFLOP/pair/step "
            f"(CNN {r['gflop_per_pair_cnn']:.1f}); {r['params']:,} parameters"
        )
    print(f"[total {time.time() - start:.0f} s]")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
