"""Trains, checkpoints and evaluates an audio difference captioning model.

  python -m adc_jax.main --config=configs/late_sdd.py:quick --workdir=workdirs/late_sdd_quick

Any config field can be overridden: `--config.train.batch_size=64`. Rerunning the same command
with the same workdir resumes from the latest checkpoint. SIGTERM (preemption) or Ctrl-C saves a
checkpoint at the next step boundary and exits with status 0; exit status 2 is a config error
reported before anything is built or a data error (the user's data cannot work), 1 a run that
failed (`adc_jax.cli`). On several hosts, run the
same command on every host (see launch/); `jax.distributed.initialize()` is called when the
environment describes more than one process (or `--multiprocess` is given).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
from absl import app, logging

from adc_jax import cli, report, train
from adc_jax import config as config_lib
from adc_jax.data import registry

FLAGS = cli.define_run_flags(
    "Experiment config file (configs/*.py[:quick|:smoke]).",
    "Directory for checkpoints, metrics and evals.",
)
# Where `--config.*` fields are documented, for the parse error of an unknown field.
FIELDS_DOC = "adc_jax/config.py (base_config)"
SECTIONS = "data, model, train, eval"
parse_flags = cli.flags_parser(FIELDS_DOC, SECTIONS)


def main(argv: list[str]) -> None:
    cli.no_extra_arguments(argv)
    cli.start_processes(FLAGS.multiprocess.value)
    config = FLAGS.config.value
    if config_lib.apply_byola_init_norm(config):
        logging.info(
            "Log-mel normalisation from %s: mean %.6g, std %.6g.",
            config.model.byola_init,
            config.model.norm_mean,
            config.model.norm_std,
        )
    workdir = cli.prepare_workdir(
        config,
        FLAGS.workdir.value,
        validate=functools.partial(config_lib.validate, num_devices=jax.device_count()),
        model_fields=config_lib.model_fields,
    )
    result: dict[str, Any] = cli.run_guarded(
        lambda: train.train_and_evaluate(config, workdir),
        paths_hint="Check that the paths in the config and --workdir exist and are writable.",
        paths={"data.data_dir": registry.data_dir(config), "--workdir": workdir},
    )
    if cli.stopped_by_signal(result):
        return
    print(f"Final eval ({result['split']}, step {result['step']}): {report.summary_line(result)}")
    print(f"Results in {workdir}/eval/step_{result['step']}.json")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
