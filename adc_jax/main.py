"""Trains, checkpoints and evaluates an audio difference captioning model.

  python -m adc_jax.main --config=configs/late_sdd.py:quick --workdir=workdirs/late_sdd_quick

Any config field can be overridden: `--config.train.batch_size=64`. Rerunning the same command
with the same workdir resumes from the latest checkpoint. SIGTERM (preemption) or Ctrl-C saves a
checkpoint at the next step boundary and exits with status 0. Exit status 2: a config error (an
unknown or invalid field, or a workdir whose checkpoint has another model), reported before
anything is built; 1: a run that failed (non-finite loss, checkpoint write, I/O). On several hosts, run the same command
on every host (see launch/); `jax.distributed.initialize()` is called when the environment
describes more than one process (or `--multiprocess` is given).
"""

from __future__ import annotations

import importlib.util
import logging as std_logging
import os
import sys

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from adc_jax import checkpointing, report, rundir, train
from adc_jax import config as config_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py[:quick|:smoke]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and evals.")
_MULTIPROCESS = flags.DEFINE_bool(
    "multiprocess",
    None,
    "Call jax.distributed.initialize() (default: when SLURM, a TPU pod or "
    "JAX_COORDINATOR_ADDRESS says there are several processes).",
)
flags.mark_flags_as_required(["config", "workdir"])


def _several_processes() -> bool:
    env = os.environ
    return (
        int(env.get("SLURM_NTASKS", "1")) > 1
        or "JAX_COORDINATOR_ADDRESS" in env
        or int(env.get("JAX_NUM_PROCESSES", "1")) > 1
        or "," in env.get("TPU_WORKER_HOSTNAMES", "")
    )


def _also_log_to(path: str) -> None:
    """Keeps the console log and appends the same records to `path`."""
    handler = std_logging.FileHandler(path)
    handler.addFilter(_DropLibraryInfo())
    handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    std_logging.getLogger().addHandler(handler)


class _DropLibraryInfo:
    """Logging filter: hides INFO chatter of orbax/grain/tfds (warnings and errors still show)."""

    _NOISY = ("/orbax/", "/grain/", "/tensorflow_datasets/", "/array_record/")

    def filter(self, record) -> bool:
        return record.levelno >= std_logging.WARNING or not any(
            part in record.pathname for part in self._NOISY
        )


def quiet_library_logs() -> None:
    """Keeps the console readable: only adc_jax's own INFO lines, everyone's warnings."""
    for handler in std_logging.getLogger().handlers + [logging.get_absl_handler()]:
        handler.addFilter(_DropLibraryInfo())


def _fail(message: str, code: int = 1) -> None:
    """Logs `message`, prints it to stderr and exits with `code` (no traceback)."""
    logging.error("%s", message)
    print(message, file=sys.stderr)
    sys.exit(code)


def _config_file_value(argv: list[str]) -> ml_collections.ConfigDict | None:
    """The config that `--config=FILE[:ARG]` names, loaded as config_flags does, without the
    overrides; None when the flag is missing or the file cannot be loaded."""
    values = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")]
    values += [b for a, b in zip(argv[1:], argv[2:], strict=False) if a == "--config"]
    if not values:
        return None
    path, _, arg = values[-1].partition(".py:")
    path = path if path.endswith(".py") else path + ".py"
    try:
        spec = importlib.util.spec_from_file_location("adc_jax_config_file", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(arg) if arg else module.get_config()
    except Exception:  # noqa: BLE001 - then every override is named as a suspect
        return None


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with readable errors (exit status 2) for bad `--config.*` flags.

    ml_collections raises AttributeError/KeyError (with a traceback) for an override of a field
    the config does not have; this names the flag (found by looking each `--config.*` override
    up in the config file's fields) and says where the fields are listed.
    """
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:  # a value of the wrong type, a missing required flag, ...
        print(
            f"Flags error: {e}\nPass --helpshort or --helpfull to see the flags.", file=sys.stderr
        )
        sys.exit(2)
    except (AttributeError, KeyError):
        config = _config_file_value(argv)
        overrides = [a[2:].split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
        unknown = [
            name
            for name in overrides
            if config is None or not config_lib.has_field(config, name[len("config.") :])
        ]
        where = f"--{unknown[0]}" if unknown else "a --config.* flag"
        print(
            f"Config error: {where} names a field the config does not have. The fields "
            "and their meaning are listed in adc_jax/config.py (base_config); check the "
            "spelling and the section (data, model, train, eval).",
            file=sys.stderr,
        )
        sys.exit(2)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    quiet_library_logs()
    multiprocess = _MULTIPROCESS.value
    if multiprocess is None:
        multiprocess = _several_processes()
    if multiprocess:
        # jax reads JAX_COORDINATOR_ADDRESS (and SLURM/TPU variables) itself, not these two.
        env = os.environ
        jax.distributed.initialize(
            num_processes=int(env["JAX_NUM_PROCESSES"]) if "JAX_NUM_PROCESSES" in env else None,
            process_id=int(env["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in env else None,
        )

    config = _CONFIG.value
    workdir = os.path.abspath(os.path.expanduser(_WORKDIR.value))
    # Everything that can be checked without data or a model fails here, before compilation.
    if config_lib.apply_byola_init_norm(config):
        logging.info(
            "Log-mel normalisation from %s: mean %.6g, std %.6g.",
            config.model.byola_init,
            config.model.norm_mean,
            config.model.norm_std,
        )
    try:
        config_lib.validate(config, num_devices=jax.device_count())
        checkpointing.check_workdir(config, rundir.checkpoint_dir(workdir))
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
        _also_log_to(os.path.join(workdir, "train.log"))
    logging.info(
        "JAX %s: process %d of %d, %d local / %d global devices: %s",
        jax.__version__,
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices(),
    )
    logging.info(
        "Mesh: ('data',) over %d devices; global batch %d = %d per device.",
        jax.device_count(),
        config.train.batch_size,
        config.train.batch_size // jax.device_count(),
    )
    if jax.process_index() == 0:
        logging.info("Config (also in %s/config.json):\n%s", workdir, config)
    try:
        result = train.train_and_evaluate(config, workdir)
    except config_lib.ConfigError as e:
        _fail(f"Config error: {e}", code=2)
    except (train.NonFiniteError, checkpointing.CheckpointError) as e:
        _fail(f"Error: {e}")
    except OSError as e:  # unreadable/unwritable data_dir or workdir, missing files
        logging.exception("Stopped by an I/O error:")
        _fail(
            f"Error: {type(e).__name__}: {e}. Check that the paths in the config and "
            "--workdir exist and are writable."
        )
    if "stopped_at" in result:
        print(
            f"Stopped by {result['signal']} at step {result['stopped_at']}; the checkpoint is "
            f"in {result['checkpoint_dir']}. Run the same command again to resume."
        )
        return
    print(f"Final eval ({result['split']}, step {result['step']}): {report.summary_line(result)}")
    print(f"Results in {workdir}/eval/step_{result['step']}.json")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
