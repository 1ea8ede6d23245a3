"""The command line of BYOL-A pretraining.

  python -m adc_jax.pretrain --config=configs/byola_pretrain.py:quick --workdir=workdirs/byola_quick

Exit status 2: a config error (an unknown or invalid field, or a workdir whose checkpoint has
another model); 1: a failed run (non-finite loss, checkpoint write, I/O). SIGTERM or Ctrl-C saves
a checkpoint at the next step and exits with status 0.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
from typing import Any

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from adc_jax import checkpointing, multihost, rundir
from adc_jax import config as config_lib
from adc_jax.loop import NonFiniteError
from adc_jax.pretrain import config as pretrain_config_lib
from adc_jax.pretrain.train import CHECKPOINT_DIR, pretrain

# ------------------------------------------------------------------------------ command line

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Pretraining config file (configs/byola_pretrain.py[:quick|:smoke]).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, encoder.")
_MULTIPROCESS = flags.DEFINE_bool(
    "multiprocess",
    None,
    "Call jax.distributed.initialize() (default: when SLURM, a TPU pod or "
    "JAX_COORDINATOR_ADDRESS says there are several processes).",
)
flags.mark_flags_as_required(["config", "workdir"])


class _DropLibraryInfo:
    """Logging filter: hides INFO chatter of orbax/grain/tfds (warnings and errors still show)."""

    _NOISY = ("/orbax/", "/grain/", "/tensorflow_datasets/", "/array_record/")

    def filter(self, record) -> bool:
        return record.levelno >= std_logging.WARNING or not any(
            part in record.pathname for part in self._NOISY
        )


def _fail(message: str, code: int = 1) -> None:
    """Logs `message`, prints it to stderr and exits with `code` (no traceback)."""
    logging.error("%s", message)
    print(message, file=sys.stderr)
    sys.exit(code)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with readable errors (exit status 2) for bad flags."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(
            f"Flags error: {e}\nPass --helpshort or --helpfull to see the flags.", file=sys.stderr
        )
        sys.exit(2)
    except (AttributeError, KeyError) as e:  # ml_collections: an override of a missing field
        print(
            f"Config error: a --config.* flag names a field the config does not have ({e}). "
            "The fields and their meaning are listed in adc_jax/pretrain/config.py; check the "
            "spelling and the section (data, model, pretrain, train).",
            file=sys.stderr,
        )
        sys.exit(2)


def _finetune_hint(config: ml_collections.ConfigDict, result: dict[str, Any]) -> str:
    """The command that fine-tunes the captioner from the exported encoder (the captioner takes
    the log-mel statistics from the encoder's meta.json: `model.byola_init_norm`)."""
    size = config.get("size", "paper")
    size_arg = "" if size == "paper" else f":{size}"
    return (
        f"python -m adc_jax.main --config=configs/late_sdd.py{size_arg} --workdir=WORKDIR "
        f"--config.model.byola_init={result['encoder_dir']}"
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    for handler in std_logging.getLogger().handlers + [logging.get_absl_handler()]:
        handler.addFilter(_DropLibraryInfo())
    multihost.initialize(_MULTIPROCESS.value)
    config = _CONFIG.value
    workdir = os.path.abspath(os.path.expanduser(_WORKDIR.value))
    try:
        pretrain_config_lib.validate(config, num_devices=jax.device_count())
        checkpointing.check_workdir(
            config,
            os.path.join(workdir, CHECKPOINT_DIR),
            fields=pretrain_config_lib.model_fields,
        )
    except config_lib.ConfigError as e:
        _fail(f"Config error: {e}", code=2)
    if jax.process_index() == 0:
        try:
            os.makedirs(workdir, exist_ok=True)
            rundir.write_config(config, workdir)
        except OSError as e:
            _fail(
                f"Error: cannot write to the workdir {workdir}: {e}. Choose a writable "
                "--workdir (a directory, not a file, with free space)."
            )
        handler = std_logging.FileHandler(os.path.join(workdir, "train.log"))
        handler.addFilter(_DropLibraryInfo())
        handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        std_logging.getLogger().addHandler(handler)
        logging.info("Config (also in %s/config.json):\n%s", workdir, config)
    logging.info(
        "JAX %s: process %d of %d, %d local / %d global devices; mesh ('data',), global "
        "batch %d = %d per device.",
        jax.__version__,
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        config.train.batch_size,
        config.train.batch_size // jax.device_count(),
    )
    try:
        result = pretrain(config, workdir)
    except config_lib.ConfigError as e:
        _fail(f"Config error: {e}", code=2)
    except (NonFiniteError, checkpointing.CheckpointError) as e:
        _fail(f"Error: {e}")
    except OSError as e:  # missing or unreadable audio, unwritable paths
        logging.exception("Stopped by an I/O error:")
        _fail(
            f"Error: {type(e).__name__}: {e}. Check the paths in the config (data.audio_dir, "
            "data.data_dir) and that --workdir is writable."
        )
    except ValueError as e:  # data that cannot work (e.g. fewer clips than one batch)
        logging.exception("Stopped by an error:")
        _fail(f"Error: {e}")
    if "stopped_at" in result:
        print(
            f"Stopped by {result['signal']} at step {result['stopped_at']}; the checkpoint is "
            f"in {result['checkpoint_dir']}. Run the same command again to resume."
        )
        return
    loss = "n/a" if result["loss"] is None else f"{result['loss']:.4f}"
    print(
        f"Pretrained {result['step']} steps (last logged loss {loss}); encoder in "
        f"{result['encoder_dir']}.\nFine-tune the captioner from it:\n  "
        f"{_finetune_hint(config, result)}"
    )


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
