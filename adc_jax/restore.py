"""Loads a trained run (config, vocabulary, model state) from its workdir for inference.

Evaluation and captioning always rebuild the model from the `config.json` saved in the workdir,
so a checkpoint is never paired with a model of another shape.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
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


def load_trained(workdir: str, step: int | None = None, mesh: Mesh | None = None) -> TrainedRun:
    """Restores checkpoint `step` (default: the latest) of the run in `workdir`.

    Raises FileNotFoundError with a hint when the workdir has no config, vocabulary or checkpoint.
    """
    from adc_jax.train import load_config

    workdir = os.path.abspath(os.path.expanduser(workdir))
    config = load_config(workdir)
    # The BYOL-A initialisation is inside the checkpoint; its source file is not needed again.
    config.model.byola_init = ""
    vocab_path = os.path.join(workdir, "vocab.json")
    if not os.path.exists(vocab_path):
        raise FileNotFoundError(f"{vocab_path} not found: the run in {workdir} never started "
                                "training. Train it first with python -m adc_jax.main.")
    vocab = Vocabulary.load(vocab_path)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(f"No checkpoints in {workdir} (expected {ckpt_dir}). Train first, "
                                "or pass the workdir of a trained run.")
    checkpointer = checkpointing.Checkpointer(ckpt_dir, keep=10**6, async_save=False)
    steps = checkpointer.all_steps()
    if not steps:
        raise FileNotFoundError(f"No complete checkpoint in {ckpt_dir}. Train first, or pass the "
                                "workdir of a trained run.")
    if step is None:
        step = max(steps)
    elif step not in steps:
        raise FileNotFoundError(f"No checkpoint for step {step} in {ckpt_dir}; available: "
                                f"{sorted(steps)}.")
    mesh = mesh or sharding_lib.create_mesh()
    ts = step_lib.create_train_state(config, len(vocab), mesh)
    meta = checkpointing.run_meta(config, len(vocab))
    checkpointing.check_compatible(checkpointer.read_meta(step), meta, ckpt_dir)
    ts.state, _ = checkpointer.restore(step, ts.state)
    checkpointer.close()
    return TrainedRun(config, vocab, ts, mesh, step, workdir)
