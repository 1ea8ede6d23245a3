"""Times the GPT-2 caption decoder against the paper's word decoder, side by side in one process.

  python tools/benchmark_lm_decoder.py [--size=quick] [--rounds=5] [--steps=6] [--json_out=FILE]

For each model (configs/late_sdd.py, configs/late_sdd_gpt2.py with prefix and with cross
conditioning, all at --size): the median train step (real step: front end, BYOL-A, encoder, SDD,
decoder, AdamW; batches on the device, `block_until_ready`), and the decoder's greedy decoding
with the key/value cache of the encoder's memories of one training batch, run to the maximum length
(early_stop=False, so every model decodes the same number of steps), as ms per token step. The
models are timed in turns (round-robin, --rounds rounds) so load from other processes on the
machine falls on all of them alike; the ratios are the numbers to read. Captions are 20 tokens for
every model; the vocabularies are the runs' own (synthetic data's words; the tiny GPT-2's BPE).
"""

from __future__ import annotations

import functools
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

from adc_jax import rundir  # noqa: E402
from adc_jax import sharding as sharding_lib  # noqa: E402
from adc_jax import step as step_lib  # noqa: E402
from adc_jax.data.lm_tokenizer import LMTokenizer  # noqa: E402
from adc_jax.data.random_batch import random_batch  # noqa: E402
from adc_jax.data.synthetic.grammar import vocabulary  # noqa: E402
from adc_jax.data.tokenizer import SPECIAL_TOKENS  # noqa: E402
from adc_jax.models.decoder import greedy_decode  # noqa: E402
from adc_jax.models.tiny_gpt2 import lm_directory  # noqa: E402

_SIZE = flags.DEFINE_enum("size", "quick", ["quick", "smoke"], "Config size.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Round-robin rounds.")
_STEPS = flags.DEFINE_integer("steps", 6, "Timed train steps per model and round.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write the JSON result here.")

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CAPTION_TOKENS = 20


def _load(name: str, arg: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


class Subject:
    """One model: its jitted train step and cached greedy decoder, ready to time."""

    def __init__(self, label: str, config, mesh):
        self.label, self.config = label, config
        if config.model.lm_path:
            rundir.ensure_tiny_lm(config)
            vocab_size = len(LMTokenizer.from_directory(lm_directory(config)))
        else:
            vocab_size = len(SPECIAL_TOKENS) + len(vocabulary())
        self.vocab_size = vocab_size
        ts = step_lib.create_train_state(config, vocab_size, mesh)
        self.ts = ts
        self.params = step_lib.parameter_count(ts.state)
        self.step_fn = step_lib.jit_train_step(ts, config, mesh)
        batch = random_batch(
            config,
            vocab_size,
            batch_size=config.train.batch_size,
            seed=0,
            caption_words=CAPTION_TOKENS - 2,
        )
        self.batch = sharding_lib.global_batch(batch, mesh)
        model = nnx.merge(ts.graphdef, ts.rng_state, ts.state)["model"]
        graphdef, state = nnx.split(model.decoder)
        b = self.batch
        enc = jax.jit(
            lambda: model.encode(b["wav1"], b["wav1_len"], b["wav2"], b["wav2_len"], train=False)
        )()
        self.memory, self.valid = enc["memory"], enc["memory_valid"]
        self.decoder_state = jax.tree.map(jnp.copy, state)  # the train step donates the state
        self.decode_fn = jax.jit(
            lambda st, m, v: greedy_decode(nnx.merge(graphdef, st), m, v, early_stop=False)
        )
        self.max_len = config.model.max_decode_len
        self.step_ms: list[float] = []
        self.decode_ms: list[float] = []

    def warm(self) -> None:
        self.ts.state, metrics = self.step_fn(self.ts.rng_state, self.ts.state, self.batch)
        jax.block_until_ready(metrics)
        jax.block_until_ready(self.decode_fn(self.decoder_state, self.memory, self.valid))

    def time_round(self, steps: int) -> None:
        for _ in range(steps):
            start = time.perf_counter()
            self.ts.state, metrics = self.step_fn(self.ts.rng_state, self.ts.state, self.batch)
            jax.block_until_ready(metrics)
            self.step_ms.append(1e3 * (time.perf_counter() - start))
        start = time.perf_counter()
        jax.block_until_ready(self.decode_fn(self.decoder_state, self.memory, self.valid))
        self.decode_ms.append(1e3 * (time.perf_counter() - start) / (self.max_len - 1))

    def result(self) -> dict:
        return {
            "model": self.label,
            "parameters": self.params,
            "vocab_size": self.vocab_size,
            "train_step_ms": statistics.median(self.step_ms),
            "decode_ms_per_token": statistics.median(self.decode_ms),
            "decode_batch": int(self.memory.shape[0]),
            "max_len": self.max_len,
        }


def main(argv) -> None:
    del argv
    size = _SIZE.value
    mesh = sharding_lib.create_mesh()
    subjects = [
        Subject("word decoder (late_sdd)", _load("late_sdd", size), mesh),
        Subject("GPT-2 prefix (late_sdd_gpt2)", _load("late_sdd_gpt2", size), mesh),
        Subject("GPT-2 cross (late_sdd_gpt2,cross)", _load("late_sdd_gpt2", f"{size},cross"), mesh),
    ]
    for s in subjects:
        s.warm()
    for _ in range(_ROUNDS.value):
        for s in subjects:
            s.time_round(_STEPS.value)
    base = subjects[0].result()
    rows = []
    print(
        f"{'model':36s} {'params':>10s} {'step ms':>9s} {'ratio':>6s} {'ms/token':>9s} {'ratio':>6s}"
    )
    for s in subjects:
        r = s.result()
        r["step_ratio"] = r["train_step_ms"] / base["train_step_ms"]
        r["decode_ratio"] = r["decode_ms_per_token"] / base["decode_ms_per_token"]
        rows.append(r)
        print(
            f"{r['model']:36s} {r['parameters']:>10,d} {r['train_step_ms']:9.1f} "
            f"{r['step_ratio']:6.2f} {r['decode_ms_per_token']:9.2f} {r['decode_ratio']:6.2f}"
        )
    out = {
        "size": size,
        "device": jax.devices()[0].device_kind,
        "devices": jax.device_count(),
        "batch": subjects[0].config.train.batch_size,
        "caption_tokens": CAPTION_TOKENS,
        "rows": rows,
    }
    print(json.dumps(out))
    if _JSON_OUT.value:
        with open(_JSON_OUT.value, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    functools.partial(app.run, main)()
