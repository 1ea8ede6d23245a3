"""What every command line that trains shares: `adc_jax.main`, `adc_jax.pretrain` and the tools.

  flags = cli.define_run_flags("Experiment config file ...", "Directory for ...")

  def main(argv):
      cli.no_extra_arguments(argv)
      cli.start_processes(flags.multiprocess.value)
      workdir = cli.prepare_workdir(config, flags.workdir.value, validate=..., model_fields=...)
      result = cli.run_guarded(lambda: train(config, workdir), paths_hint="...")
      if cli.stopped_by_signal(result):
          return
      ...

  app.run(main, flags_parser=cli.flags_parser(FIELDS_DOC, SECTIONS))

Exit statuses, the same for every entry point: 0 for a finished run or one stopped by SIGTERM /
Ctrl-C (a checkpoint was saved; the same command resumes); 2 for a config error (an unknown or
invalid field, a workdir whose checkpoint has another model), reported before anything is built,
and for a data error (`adc_jax.data.errors.DataError`: a class the folder lacks, a missing column
or file, an unreadable file): the config or the data must change; 1 for a run that failed
(non-finite loss, a checkpoint that could not be written, I/O). Failures print their message
once, to stderr, without a traceback; the workdir's train.log gets the same line (and, for I/O
errors, the traceback).
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.util
import logging as std_logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import jax
import ml_collections
from absl import flags, logging
from ml_collections import config_flags

from adc_jax import checkpointing, multihost, rundir
from adc_jax.config_checks import ConfigError, has_field
from adc_jax.data import paths
from adc_jax.data.errors import DataError
from adc_jax.loop import NonFiniteError

# --------------------------------------------------------------------------------------- logs


class DropLibraryInfo:
    """Logging filter: hides INFO chatter of orbax/grain/tfds (warnings and errors still show)."""

    _NOISY = ("/orbax/", "/grain/", "/tensorflow_datasets/", "/array_record/")
    # tfds warnings that every build of an adc_jax dataset triggers and that ask nothing of
    # the user (a builder config made in code; a variant folder before its first build).
    _ROUTINE = ("Using custom data configuration", "Variant folder %s has no %s")

    def filter(self, record) -> bool:
        if "/tensorflow_datasets/" in record.pathname and str(record.msg).startswith(self._ROUTINE):
            return False
        return record.levelno >= std_logging.WARNING or not any(
            part in record.pathname for part in self._NOISY
        )


def quiet_library_logs() -> None:
    """Keeps the console readable: only adc_jax's own INFO lines, everyone's warnings."""
    for handler in std_logging.getLogger().handlers + [logging.get_absl_handler()]:
        handler.addFilter(DropLibraryInfo())


# The handlers of the log files `also_log_to` opened (a failure is written to them only).
_LOG_FILES: list[std_logging.Handler] = []


def also_log_to(path: str) -> None:
    """Keeps the console log and appends the same records to `path`."""
    handler = std_logging.FileHandler(path)
    handler.addFilter(DropLibraryInfo())
    handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    std_logging.getLogger().addHandler(handler)
    _LOG_FILES.append(handler)


def log_to_files(message: str, *, exc_info: bool = False) -> None:
    """Writes an ERROR record to the log files only (the console shows the message once, from
    `fail`); with exc_info, the traceback of the exception being handled goes with it."""
    record = std_logging.getLogger().makeRecord(
        "adc_jax", std_logging.ERROR, __file__, 0, message, None,
        sys.exc_info() if exc_info else None,
    )  # fmt: skip
    for handler in _LOG_FILES:
        handler.handle(record)


def sentence(text: str) -> str:
    """`text` ending in exactly one full stop (or its own "?" / "!"), for joining messages."""
    text = str(text).rstrip()
    return text if text.endswith((".", "?", "!")) else text + "."


def fail(message: str, code: int = 1, *, traceback: bool = False) -> NoReturn:
    """Prints `message` once to stderr, writes it to the log files (with the traceback of the
    exception being handled when asked) and exits with `code`; no traceback on the console."""
    log_to_files(message, exc_info=traceback)
    print(message, file=sys.stderr)
    sys.exit(code)


# -------------------------------------------------------------------------------------- flags


@dataclasses.dataclass(frozen=True)
class RunFlags:
    """The flags of a training command: --config=FILE[:SIZE] (+ --config.* overrides),
    --workdir and --multiprocess."""

    config: Any
    workdir: flags.FlagHolder
    multiprocess: flags.FlagHolder


def define_run_flags(config_help: str, workdir_help: str) -> RunFlags:
    """Defines --config, --workdir (both required) and --multiprocess in absl's global flags.

    Call it once, at the import of the module that runs as the program (`python -m ...`).
    """
    config = config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
    workdir = flags.DEFINE_string("workdir", None, workdir_help)
    multiprocess = flags.DEFINE_bool(
        "multiprocess",
        None,
        "Call jax.distributed.initialize() (default: when SLURM, a TPU pod or "
        "JAX_COORDINATOR_ADDRESS says there are several processes).",
    )
    flags.mark_flags_as_required(["config", "workdir"])
    return RunFlags(config, workdir, multiprocess)


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


def flags_parser(fields_doc: str, sections: str) -> Callable[[list[str]], list[str]]:
    """absl's flag parsing (`app.run(main, flags_parser=...)`) with readable errors, exit 2.

    ml_collections raises AttributeError/KeyError (with a traceback) for an override of a field
    the config does not have; the parser names the flag (found by looking each `--config.*`
    override up in the config file's fields) and says where the fields are listed.

    Args:
      fields_doc: where the fields and their meaning are listed, e.g. "adc_jax/config.py".
      sections: the config's sections, e.g. "data, model, train, eval".
    """

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:  # a value of the wrong type, a missing required flag, ...
            print(
                f"Flags error: {e}\nPass --helpshort or --helpfull to see the flags.",
                file=sys.stderr,
            )
            sys.exit(2)
        except (AttributeError, KeyError):
            config = _config_file_value(argv)
            overrides = [a[2:].split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
            unknown = [
                name
                for name in overrides
                if config is None or not has_field(config, name[len("config.") :])
            ]
            where = f"--{unknown[0]}" if unknown else "a --config.* flag"
            print(
                f"Config error: {where} names a field the config does not have. The fields "
                f"and their meaning are listed in {fields_doc}; check the spelling and the "
                f"section ({sections}).",
                file=sys.stderr,
            )
            sys.exit(2)

    return parse


def no_extra_arguments(argv: list[str]) -> None:
    """Fails (exit 2) on positional arguments: every setting is a flag."""
    if len(argv) > 1:
        print(f"Error: unexpected arguments {' '.join(argv[1:])!r}; see --help.", file=sys.stderr)
        sys.exit(2)


# -------------------------------------------------------------------------- starting a run


def start_processes(multiprocess: bool | None) -> None:
    """Joins a multi-process run when asked to, or when the environment describes one
    (`multihost.initialize`); then hides the libraries' INFO logs."""
    quiet_library_logs()
    multihost.initialize(multiprocess)


def prepare_workdir(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    validate: Callable[[ml_collections.ConfigDict], None],
    model_fields: Callable[[ml_collections.ConfigDict], dict[str, Any]],
) -> str:
    """Checks the config, then sets up the workdir; returns its absolute path.

    Everything that can be checked without data or a model fails here, before compilation:
    `validate(config)` and a checkpoint in the workdir whose `model_fields` differ (exit 2). Then
    process 0 writes `config.json` and appends the log to `train.log` (an unwritable workdir
    exits 1), and every process logs its devices, the mesh and the batch per device.
    """
    try:
        paths.require_local(workdir, "--workdir", paths.WORKDIR_WHY)
    except paths.RemotePathError as e:
        fail(f"Config error: {e}", code=2)
    workdir = os.path.abspath(os.path.expanduser(workdir))
    try:
        validate(config)
        checkpointing.check_workdir(
            config, checkpointing.checkpoint_dir(workdir), fields=model_fields
        )
    except ConfigError as e:
        fail(f"Config error: {e}", code=2)
    if jax.process_index() == 0:
        try:
            os.makedirs(workdir, exist_ok=True)
            rundir.write_config(config, workdir)
        except OSError as e:
            fail(
                f"Error: cannot write to the workdir {workdir}: {e}. Choose a writable "
                "--workdir (a directory, not a file, with free space)."
            )
        also_log_to(os.path.join(workdir, "train.log"))
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
    return workdir


def run_guarded(
    run: Callable[[], dict[str, Any]],
    *,
    paths_hint: str,
    data_errors: tuple[type[Exception], ...] = (),
    paths: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`run()`, with the failures a user can cause turned into one line and an exit status.

    A `DataError` (the user's data cannot work: its message names the file, row or class and
    the fix) exits with 2; an I/O error that is not one (an unwritable data_dir, a full disk)
    with 1, followed by `paths_hint`. Either way the message is printed once, without a
    traceback (train.log keeps an I/O error's).

    Args:
      run: the training; returns its result dict.
      paths_hint: what to check after an I/O error, e.g. "Check the paths in the config ...".
      data_errors: further exception types that mean "the run cannot work with these data"
        (exit 1, with the traceback in the log).
      paths: setting -> the path it names (e.g. {"data.data_dir": ...}): an I/O error on a file
        under one of them names that setting instead of `paths_hint`.
    """
    try:
        return run()
    except ConfigError as e:
        fail(f"Config error: {e}", code=2)
    except DataError as e:
        fail(f"Data error: {e}", code=2)
    except (NonFiniteError, checkpointing.CheckpointError) as e:
        fail(f"Error: {e}")
    except OSError as e:  # an unwritable data_dir or workdir, a full disk, a lost mount
        hint = io_hint(e, _setting_hint(e, paths or {}) or paths_hint)
        fail(f"Error: {type(e).__name__}: {sentence(e)} {hint}", traceback=True)
    except data_errors as e:
        fail(f"Error: {e}", traceback=True)


def _setting_hint(error: OSError, paths: dict[str, str]) -> str | None:
    """ "Check SETTING=PATH: ..." when the error's file is that path, under it or above it."""
    if not error.filename:
        return None
    failed = os.path.abspath(os.path.expanduser(str(error.filename)))
    for setting, path in paths.items():
        path = os.path.abspath(os.path.expanduser(path))
        if failed == path or os.path.commonpath([failed, path]) in (failed, path):
            return (
                f"Check {setting}={path}: it must be a directory this user can write to (it is "
                "created if missing), not a file or a read-only place."
            )
    return None


def io_hint(error: OSError, paths_hint: str) -> str:
    """What to do after an I/O error: specific when its errno says the cause, else paths_hint."""
    where = f" ({error.filename})" if error.filename else ""
    if error.errno == errno.ENOSPC:
        return f"The disk{where} is full: free space, or choose a data_dir / --workdir on another."
    if error.errno == errno.EROFS:
        return f"The file system{where} is read-only: choose a writable data_dir / --workdir."
    if isinstance(error, PermissionError):
        return (
            f"This user has no permission there{where}: fix the permissions or choose a path "
            "this user can use."
        )
    return paths_hint


def stopped_by_signal(result: dict[str, Any]) -> bool:
    """Prints how to resume and returns True when SIGTERM / Ctrl-C stopped the run."""
    if "stopped_at" not in result:
        return False
    print(
        f"Stopped by {result['signal']} at step {result['stopped_at']}; the checkpoint is "
        f"in {result['checkpoint_dir']}. Run the same command again to resume."
    )
    return True
