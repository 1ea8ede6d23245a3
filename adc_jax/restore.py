"""Loads a trained run (config, vocabulary, model state) from its workdir for inference.

Evaluation and captioning always rebuild the model from the `config.json` saved in the workdir,
so a checkpoint is never paired with a model of another shape. A config.json written before a
field was added to `adc_jax.config` gets that field's current default, with a warning naming it
(`fill_config_defaults`); the checkpoint's shape check still guards every shape-defining field.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
from absl import logging
from jax.sharding import Mesh

from adc_jax import checkpointing
from adc_jax import sharding as sharding_lib
from adc_jax import step as step_lib
from adc_jax.data.tokenizer import Vocabulary


@dataclasses.dataclass
class TrainedRun:
    config: ml_collections.ConfigDict
    vocab: Vocabulary
    train_state: step_lib.TrainState
    mesh: Mesh
    step: int
    workdir: str


def fill_config_defaults(config: ml_collections.ConfigDict) -> list[str]:
    """Adds the fields that `config` (read from an older config.json) lacks, with their defaults.

    The defaults are those of `base_config(config.size)`. Returns the dotted names of the fields
    that were added (and logs a warning naming them).
    """
    from adc_jax.config import SIZES, base_config

    size = config.get("size", "paper")
    defaults = base_config(size if size in SIZES else "paper")
    added: list[str] = []

    def merge(
        default: ml_collections.ConfigDict, saved: ml_collections.ConfigDict, prefix: str
    ) -> None:
        for key, value in default.items():
            if key not in saved:
                saved[key] = value
                added.append(prefix + key)
            elif isinstance(value, ml_collections.ConfigDict) and isinstance(
                saved[key], ml_collections.ConfigDict
            ):
                merge(value, saved[key], f"{prefix}{key}.")

    merge(defaults, config, "")
    if added:
        logging.warning(
            "config.json predates %d config field(s); using today's defaults: %s",
            len(added),
            ", ".join(f"{k}={_get(config, k)!r}" for k in added),
        )
    return added


def _get(config: ml_collections.ConfigDict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def load_trained(workdir: str, step: int | None = None, mesh: Mesh | None = None) -> TrainedRun:
    """Restores checkpoint `step` (default: the latest) of the run in `workdir`.

    Raises FileNotFoundError with a hint when the workdir has no config, vocabulary or checkpoint.
    """
    from adc_jax.train import load_config

    workdir = os.path.abspath(os.path.expanduser(workdir))
    config = load_config(workdir)
    fill_config_defaults(config)
    # The BYOL-A initialisation is inside the checkpoint; its source file is not needed again.
    config.model.byola_init = ""
    vocab_path = os.path.join(workdir, "vocab.json")
    if not os.path.exists(vocab_path):
        raise FileNotFoundError(
            f"{vocab_path} not found: the run in {workdir} never started "
            "training. Train it first with python -m adc_jax.main."
        )
    vocab = Vocabulary.load(vocab_path)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(
            f"No checkpoints in {workdir} (expected {ckpt_dir}). Train first, "
            "or pass the workdir of a trained run."
        )
    checkpointer = checkpointing.Checkpointer(ckpt_dir, keep=10**6, async_save=False)
    steps = checkpointer.all_steps()
    if not steps:
        raise FileNotFoundError(
            f"No complete checkpoint in {ckpt_dir}. Train first, or pass the "
            "workdir of a trained run."
        )
    if step is None:
        step = max(steps)
    elif step not in steps:
        raise FileNotFoundError(
            f"No checkpoint for step {step} in {ckpt_dir}; available: {sorted(steps)}."
        )
    mesh = mesh or sharding_lib.create_mesh()
    ts = step_lib.create_train_state(config, len(vocab), mesh)
    meta = checkpointing.run_meta(config, len(vocab))
    checkpointing.check_compatible(checkpointer.read_meta(step), meta, ckpt_dir)
    ts.state, _ = checkpointer.restore(step, ts.state)
    checkpointer.close()
    return TrainedRun(config, vocab, ts, mesh, step, workdir)
