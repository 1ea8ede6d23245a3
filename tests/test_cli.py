"""Tests of `adc_jax.cli`: both entry points (`python -m adc_jax.main`, `python -m
adc_jax.pretrain`) fail alike on bad command lines, before data or a model are built; and the
pieces they share (failure handling, stop report, argument check, log filter) in-process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from adc_jax import checkpointing, cli
from adc_jax.config_checks import ConfigError
from adc_jax.loop import NonFiniteError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# module, its config, where its fields are documented (named by an unknown-field error).
ENTRY_POINTS = {
    "captioner": ("adc_jax.main", "configs/late_sdd.py:smoke", "adc_jax/config.py"),
    "pretraining": (
        "adc_jax.pretrain",
        "configs/byola_pretrain.py:smoke",
        "adc_jax/pretrain/config.py",
    ),
}

# case -> the arguments after --config (the workdir is added per case).
CASES = {
    # A valid override first: the parser must name the unknown one, not the first.
    "unknown_field": ["--config.train.num_steps=3", "--config.model.nope=1"],
    "wrong_type": ["--config.train.batch_size=abc"],
    "positional": ["extra_argument"],
    "invalid_value": ["--config.train.batch_size=0"],
    "shared_invalid_value": ["--config.model.n_mels=60"],
    "workdir_is_a_file": [],
}


@pytest.fixture(scope="module", name="runs")
def runs_fixture(tmp_path_factory):
    """{(entry point, case): (exit status, stderr, workdir)}: every command line started at
    once (each exits within seconds, before building anything)."""
    root = tmp_path_factory.mktemp("cli")
    a_file = root / "a_file"
    a_file.write_text("not a directory")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    started = {}
    for name, (module, config, _) in ENTRY_POINTS.items():
        for case, args in CASES.items():
            workdir = str(a_file) if case == "workdir_is_a_file" else str(root / f"{name}_{case}")
            command = [sys.executable, "-m", module, f"--config={config}", f"--workdir={workdir}"]
            started[name, case] = (
                subprocess.Popen(
                    command + args,
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
                workdir,
            )
    results = {}
    for key, (process, workdir) in started.items():
        try:
            _, stderr = process.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        results[key] = (process.returncode, stderr, workdir)
    return results


def last_line(stderr: str) -> str:
    """The one line a failure prints (absl's log lines come before it)."""
    return stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_unknown_field_names_the_flag_and_the_fields_file(runs, entry):
    code, stderr, workdir = runs[entry, "unknown_field"]
    assert code == 2, stderr
    fields_doc = ENTRY_POINTS[entry][2]
    assert "Config error: --config.model.nope names a field the config does not have." in stderr
    assert f"are listed in {fields_doc}" in stderr
    assert "--config.train.num_steps" not in stderr
    assert "Traceback" not in stderr
    assert not os.path.exists(workdir)


def test_the_entry_points_name_their_own_fields_files(runs):
    captioner = runs["captioner", "unknown_field"][1]
    pretraining = runs["pretraining", "unknown_field"][1]
    assert "adc_jax/config.py (base_config)" in captioner
    assert "adc_jax/pretrain/config.py" in pretraining
    assert "(data, model, train, eval)" in captioner
    assert "(data, model, pretrain, train)" in pretraining


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_wrong_typed_value_is_a_flags_error(runs, entry):
    code, stderr, _ = runs[entry, "wrong_type"]
    assert code == 2, stderr
    assert "Flags error: flag --config.train.batch_size=abc" in stderr
    assert "--helpshort" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_positional_argument_is_refused(runs, entry):
    code, stderr, workdir = runs[entry, "positional"]
    assert code == 2, stderr
    assert last_line(stderr) == "Error: unexpected arguments 'extra_argument'; see --help."
    assert not os.path.exists(workdir)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_invalid_value_fails_before_anything_is_built(runs, entry):
    code, stderr, workdir = runs[entry, "invalid_value"]
    assert code == 2, stderr
    assert last_line(stderr) == (
        "Config error: config.train.batch_size=0 is invalid: must be a positive integer."
    )
    assert "Traceback" not in stderr
    # Validation comes first: not even the workdir (config.json, train.log) was written.
    assert not os.path.exists(workdir)


def test_both_entry_points_report_a_bad_shared_field_alike(runs):
    lines = {entry: runs[entry, "shared_invalid_value"] for entry in ENTRY_POINTS}
    for code, stderr, _ in lines.values():
        assert code == 2, stderr
    captioner, pretraining = (last_line(lines[e][1]) for e in ("captioner", "pretraining"))
    assert captioner == pretraining
    assert captioner.startswith("Config error: config.model.n_mels=60 is invalid: must be a ")


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_a_workdir_that_is_a_file_fails_with_status_1(runs, entry):
    code, stderr, workdir = runs[entry, "workdir_is_a_file"]
    assert code == 1, stderr
    line = last_line(stderr)
    assert line.startswith(f"Error: cannot write to the workdir {workdir}: ")
    assert line.endswith("Choose a writable --workdir (a directory, not a file, with free space).")
    assert "Traceback" not in stderr


# --------------------------------------------------------------------------- run_guarded


def exit_of(run, capsys, **kwargs) -> tuple[int, str]:
    """(exit status, stderr) of `cli.run_guarded(run, ...)`, which must exit."""
    with pytest.raises(SystemExit) as info:
        cli.run_guarded(run, paths_hint=kwargs.pop("paths_hint", "Check the paths."), **kwargs)
    return info.value.code, capsys.readouterr().err


def raiser(error: BaseException):
    def run():
        raise error

    return run


def test_run_guarded_returns_the_result():
    assert cli.run_guarded(lambda: {"step": 3}, paths_hint="x") == {"step": 3}


def test_run_guarded_config_error_exits_2(capsys):
    code, err = exit_of(raiser(ConfigError("config.train.x=1 is invalid: no.")), capsys)
    assert code == 2
    assert err.strip() == "Config error: config.train.x=1 is invalid: no."


@pytest.mark.parametrize(
    "error",
    [NonFiniteError("Non-finite loss at step 3."), checkpointing.CheckpointError("disk full")],
)
def test_run_guarded_failed_run_exits_1(capsys, error):
    code, err = exit_of(raiser(error), capsys)
    assert code == 1
    assert err.strip() == f"Error: {error}"


def test_run_guarded_io_error_exits_1_with_the_paths_hint(capsys):
    error = FileNotFoundError(2, "No such file or directory", "/data/missing.wav")
    code, err = exit_of(raiser(error), capsys, paths_hint="Check data.audio_dir.")
    assert code == 1
    assert err.strip() == f"Error: FileNotFoundError: {error}. Check data.audio_dir."
    assert "Traceback" not in err


def test_run_guarded_data_errors_exit_1_and_others_propagate(capsys):
    code, err = exit_of(
        raiser(ValueError("fewer clips than one batch")), capsys, data_errors=(ValueError,)
    )
    assert code == 1
    assert err.strip() == "Error: fewer clips than one batch"
    # A ConfigError is a ValueError too, but stays a config error.
    code, err = exit_of(
        raiser(ConfigError("config.a=1 is invalid: b")), capsys, data_errors=(ValueError,)
    )
    assert code == 2 and err.startswith("Config error:")
    # Without data_errors a ValueError is a bug: it propagates with its traceback.
    with pytest.raises(ValueError, match="a bug"):
        cli.run_guarded(raiser(ValueError("a bug")), paths_hint="x")
    for error in (RuntimeError("a bug"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            cli.run_guarded(raiser(error), paths_hint="x", data_errors=(ValueError,))
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ the smaller pieces


def test_stopped_by_signal(capsys):
    assert not cli.stopped_by_signal({"step": 6, "loss": 0.1})
    assert capsys.readouterr().out == ""
    stopped = {"stopped_at": 4, "signal": "SIGTERM", "checkpoint_dir": "/w/checkpoints"}
    assert cli.stopped_by_signal(stopped)
    assert capsys.readouterr().out.strip() == (
        "Stopped by SIGTERM at step 4; the checkpoint is in /w/checkpoints. Run the same "
        "command again to resume."
    )


def test_no_extra_arguments(capsys):
    cli.no_extra_arguments(["prog"])
    with pytest.raises(SystemExit) as info:
        cli.no_extra_arguments(["prog", "a", "b"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "Error: unexpected arguments 'a b'; see --help."


def record(level: int, pathname: str) -> logging.LogRecord:
    return logging.LogRecord("x", level, pathname, 1, "message", None, None)


@pytest.mark.parametrize(
    ("level", "pathname", "kept"),
    [
        (logging.INFO, "/venv/site-packages/orbax/checkpoint/manager.py", False),
        (logging.INFO, "/venv/site-packages/grain/_src/python/dataset.py", False),
        (logging.INFO, "/venv/site-packages/tensorflow_datasets/core/builder.py", False),
        (logging.DEBUG, "/venv/site-packages/array_record/python/reader.py", False),
        (logging.WARNING, "/venv/site-packages/orbax/checkpoint/manager.py", True),
        (logging.ERROR, "/venv/site-packages/grain/_src/python/dataset.py", True),
        (logging.INFO, "/work/adc_jax/loop.py", True),
        (logging.INFO, "/venv/site-packages/jax/_src/xla_bridge.py", True),
    ],
)
def test_drop_library_info(level, pathname, kept):
    assert cli.DropLibraryInfo().filter(record(level, pathname)) is kept


def test_config_file_value_loads_the_named_file_without_overrides():
    path = os.path.join(REPO_ROOT, "configs", "late_sdd.py")
    for argv in (
        ["prog", f"--config={path}:smoke", "--config.train.batch_size=4"],
        ["prog", "--config", f"{path}:smoke"],
    ):
        config = cli._config_file_value(argv)
        assert config.size == "smoke" and config.train.batch_size == 8
    assert cli._config_file_value(["prog", f"--config={path}"]).size == "paper"
    assert cli._config_file_value(["prog", "--workdir=w"]) is None
    assert cli._config_file_value(["prog", "--config=/no/such/file.py:smoke"]) is None
