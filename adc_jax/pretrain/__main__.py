"""The command line of BYOL-A pretraining.

  python -m adc_jax.pretrain --config=configs/byola_pretrain.py:quick --workdir=workdirs/byola_quick

Any config field can be overridden (`--config.train.num_steps=3000`); the same command resumes
from the workdir's latest checkpoint. Exit statuses are those of `adc_jax.cli`: 0 for a finished
run or one stopped by SIGTERM / Ctrl-C (checkpoint saved), 2 for a config error or a data error
(an unreadable file in data.audio_dir, fewer clips than one batch), 1 for a failed run
(non-finite loss, checkpoint write, I/O).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import ml_collections
from absl import app

from adc_jax import cli
from adc_jax.data import registry
from adc_jax.pretrain import config as pretrain_config_lib
from adc_jax.pretrain.train import pretrain

FLAGS = cli.define_run_flags(
    "Pretraining config file (configs/byola_pretrain.py[:quick|:smoke]).",
    "Directory for checkpoints, metrics, encoder.",
)
parse_flags = cli.flags_parser("adc_jax/pretrain/config.py", "data, model, pretrain, train")


def finetune_hint(config: ml_collections.ConfigDict, result: dict[str, Any]) -> str:
    """The command that fine-tunes the captioner from the exported encoder (the captioner takes
    the log-mel statistics from the encoder's meta.json: `model.byola_init_norm`)."""
    size = config.get("size", "paper")
    size_arg = "" if size == "paper" else f":{size}"
    return (
        f"python -m adc_jax.main --config=configs/late_sdd.py{size_arg} --workdir=WORKDIR "
        f"--config.model.byola_init={result['encoder_dir']}"
    )


def main(argv: list[str]) -> None:
    cli.no_extra_arguments(argv)
    cli.start_processes(FLAGS.multiprocess.value)
    config = FLAGS.config.value
    workdir = cli.prepare_workdir(
        config,
        FLAGS.workdir.value,
        validate=functools.partial(pretrain_config_lib.validate, num_devices=jax.device_count()),
        model_fields=pretrain_config_lib.model_fields,
    )
    result = cli.run_guarded(
        lambda: pretrain(config, workdir),
        paths_hint="Check the paths in the config (data.audio_dir, data.data_dir) and that "
        "--workdir is writable.",
        data_errors=(ValueError,),  # e.g. fewer clips than one batch
        paths={"data.data_dir": registry.data_dir(config), "--workdir": workdir},
    )
    if cli.stopped_by_signal(result):
        return
    loss = "n/a" if result["loss"] is None else f"{result['loss']:.4f}"
    print(
        f"Pretrained {result['step']} steps (last logged loss {loss}); encoder in "
        f"{result['encoder_dir']}.\nFine-tune the captioner from it:\n  "
        f"{finetune_hint(config, result)}"
    )


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
