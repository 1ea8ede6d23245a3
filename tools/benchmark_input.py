"""Benchmarks the training input pipeline: `pipeline.train_dataset` over the built train split.

  python tools/benchmark_input.py --size=paper [--data_dir=DIR] [--batches=100] [--num_workers=0]
  python tools/benchmark_input.py --config=configs/adiff.py:acd --config.data.csv_dir=... \
      --config.data.audio_dir=...       # any config's dataset (here ADIFF: pairs naming clips)

Builds (once) or loads the synthetic_adc variant of the size preset (or, with --config, that
config's dataset), reads the training captions and builds the vocabulary from them as training
does (`rundir.prepare_data`, into a temporary folder, for --config), then iterates the real training stream
(shuffle, caption choice, tokens, pad/crop, batching, prefetch threads, optional grain worker
processes) and times `--batches` batches after `--warmup` untimed ones. Nothing goes to a device:
this is the host-side ceiling of the pipeline. Prints a table and one JSON line with pairs/s and
the CPU time it used per pair and the machine's load average: on a shared machine the pipeline
gets only its share of the cores, so compare pairs/s at similar load, and read the CPU per pair
(main process, reading threads included; not grain workers) as the cost that does not depend on
the load.

Issue target: >= 1,000 pairs/s at paper scale (10 s clips, batch 32) on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tempfile  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from adc_jax import config as config_lib  # noqa: E402
from adc_jax import rundir  # noqa: E402
from adc_jax.data import clip_store, pipeline, registry  # noqa: E402
from adc_jax.data.synthetic import builder as synthetic  # noqa: E402
from adc_jax.data.tokenizer import Vocabulary  # noqa: E402
from adc_jax.data.vocab import read_captions, split_captions  # noqa: E402

_SIZE = flags.DEFINE_enum("size", "paper", ["paper", "quick", "smoke"], "Size preset.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "tfds data directory (default: $ADC_JAX_DATA_DIR or ~/.cache/adc_jax)."
)
_BATCHES = flags.DEFINE_integer("batches", 100, "Timed batches.")
_WARMUP = flags.DEFINE_integer("warmup", 10, "Untimed batches first (threads, page cache).")
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", None, "grain worker processes (default: the config's data.num_workers)."
)
_PREFETCH = flags.DEFINE_integer("prefetch", None, "data.prefetch (default: the config's).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "train.batch_size (default: config's).")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Append the JSON result line to this file.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Benchmark this config's dataset instead of --size's synthetic_adc."
)


def main(argv: list[str]) -> None:
    """Builds/loads the data, times the training stream, prints a table and a JSON line."""
    del argv
    config = _CONFIG.value if _CONFIG.value is not None else config_lib.base_config(_SIZE.value)
    if _NUM_WORKERS.value is not None:
        config.data.num_workers = _NUM_WORKERS.value
    if _PREFETCH.value is not None:
        config.data.prefetch = _PREFETCH.value
    if _BATCH_SIZE.value is not None:
        config.train.batch_size = _BATCH_SIZE.value
    data_dir = os.path.expanduser(_DATA_DIR.value or config_lib.default_data_dir())
    load_start = os.getloadavg()

    start = time.perf_counter()
    if _CONFIG.value is not None:
        config.data.data_dir = data_dir
        builder = registry.load_builder(config)
    else:
        builder = synthetic.build_synthetic(
            data_dir, synthetic.SyntheticSpec.from_config(config.data)
        )
    build_s = time.perf_counter() - start
    source = clip_store.pair_source(builder, "train")

    start = time.perf_counter()
    if _CONFIG.value is not None:  # the run's own start-up: captions, tiers, vocabulary
        with tempfile.TemporaryDirectory() as workdir:
            data = rundir.prepare_data(config, workdir)
        stats, vocab = data.train_stats, data.vocab
    else:
        _, stats = read_captions(split_captions(builder, "train"))
        vocab = Vocabulary.build(stats.captions, min_count=config.data.vocab_min_count)
    captions_s = time.perf_counter() - start

    start = time.perf_counter()
    iterator = iter(pipeline.train_dataset(source, vocab, config, stats=stats))
    batch = next(iterator)
    first_s = time.perf_counter() - start
    for _ in range(_WARMUP.value - 1):
        batch = next(iterator)
    start = time.perf_counter()
    cpu_start = time.process_time()
    checksum = 0
    for _ in range(_BATCHES.value):
        batch = next(iterator)
        checksum += int(batch["wav1_len"].sum())  # touch the batch, as a consumer would
    elapsed = time.perf_counter() - start
    cpu_s = time.process_time() - cpu_start
    load_end = os.getloadavg()

    b = batch["wav1"].shape[0]
    pairs = _BATCHES.value * b
    pairs_s = pairs / elapsed
    workers = config.data.num_workers
    batch_mb = sum(v.nbytes for v in batch.values()) / 2**20
    result = {
        "dataset": f"{builder.name}/{builder.builder_config.name}",
        "size": config.size,
        "num_train": len(source),
        "clip_seconds": config.data.clip_seconds,
        "batch_size": b,
        "num_workers": config.data.num_workers,
        "prefetch": config.data.prefetch,
        "batches": _BATCHES.value,
        "warmup": _WARMUP.value,
        "pairs_per_s": round(pairs_s, 1),
        "ms_per_batch": round(1000 * elapsed / _BATCHES.value, 3),
        "mb_per_s": round(_BATCHES.value * batch_mb / elapsed, 1),
        "main_process_cpu_frac": round(cpu_s / elapsed, 2),
        "cpu_ms_per_pair": round(1000 * cpu_s / pairs, 3) if not workers else None,
        "first_batch_s": round(first_s, 3),
        "build_or_load_s": round(build_s, 2),
        "captions_and_vocab_s": round(captions_s, 2),
        "vocab_size": len(vocab),
        "cpu_count": os.cpu_count(),
        "loadavg_1m_start": round(load_start[0], 2),
        "loadavg_1m_end": round(load_end[0], 2),
        "batch_fields": {k: [list(v.shape), str(v.dtype)] for k, v in batch.items()},
        "numpy": np.__version__,
    }
    rows = [
        ("dataset", f"{builder.name}/{builder.builder_config.name} ({len(source)} train pairs)"),
        ("batch", f"{b} pairs of {config.data.clip_seconds:g} s ({batch_mb:.1f} MiB)"),
        ("workers / prefetch", f"{config.data.num_workers} / {config.data.prefetch}"),
        ("build or load", f"{build_s:.2f} s"),
        ("captions + vocab", f"{captions_s:.2f} s ({len(vocab)} tokens)"),
        ("first batch", f"{first_s:.3f} s"),
        ("timed", f"{_BATCHES.value} batches after {_WARMUP.value} warm-up"),
        ("ms/batch", f"{1000 * elapsed / _BATCHES.value:.2f}"),
        ("pairs/s", f"{pairs_s:,.0f}"),
        ("audio MB/s", f"{_BATCHES.value * batch_mb / elapsed:,.0f}"),
        ("main-process CPU", f"{100 * cpu_s / elapsed:.0f}% of one core"),
        (
            "CPU per pair",
            f"{1000 * cpu_s / pairs:.3f} ms (one free core: ~{pairs / cpu_s:,.0f} pairs/s)"
            if not workers
            else "n/a (grain workers: their CPU time is not counted)",
        ),
        (
            "load average (1 min)",
            f"{load_start[0]:.2f} -> {load_end[0]:.2f} on {os.cpu_count()} CPUs",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))
    line = json.dumps(result)
    print(line)
    if _JSON_OUT.value:
        with open(_JSON_OUT.value, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    app.run(main)
