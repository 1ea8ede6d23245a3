"""What happens when a run is killed, preempted, misconfigured, runs out of disk or meets NaNs,
and when evaluation meets degenerate inputs.

Subprocess runs use `python -m adc_jax.main` (or conftest.HOOKED_MAIN, which only slows steps or
holds a checkpoint write) on the session's smoke dataset with a shared compile cache; the NaN
and disk tests run `train.train_and_evaluate` in-process with the same config, so they reuse the
compiled step.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import signal
import subprocess
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from adc_jax import checkpointing, evaluate, loop, rundir, train
from adc_jax import sharding as sharding_lib
from adc_jax import step as step_lib
from adc_jax.data import pipeline, registry
from adc_jax.data.eval_split import load_eval_split
from adc_jax.data.tokenizer import PAD
from adc_jax.metrics import captioning
from adc_jax.metrics.captioning import METRIC_KEYS
from adc_jax.metrics.scores import score_predictions

STEPS = 12


def tmp_checkpoint_dirs(workdir: str, step: int | None = None) -> list[str]:
    """Orbax's unfinished checkpoint directories (`<step>.orbax-checkpoint-tmp-*`)."""
    prefix = "*" if step is None else str(step)
    return glob.glob(os.path.join(workdir, "checkpoints", f"{prefix}.orbax-checkpoint-tmp*"))


# ---------------------------------------------------------------------- kill -9, kill in a write,
# ---------------------------------------------------------------------- SIGTERM, then the end


@pytest.fixture(scope="module")
def interrupted_run(smoke_setup):
    """One workdir taken through SIGKILL while checkpoint 9 is being written (3 and 6 complete,
    steps 7-10+ logged), SIGTERM a few steps after the resume, and a last run to the end."""
    s, workdir = smoke_setup, smoke_setup.workdir("interrupted")
    facts = {}

    run = s.start(workdir, hooks={"ADC_TEST_HOLD_CHECKPOINT": "9"})
    # Checkpoint 9's write has begun and training went on past it.
    run.wait_until(lambda: tmp_checkpoint_dirs(workdir, 9) and s.last_train_step(workdir) >= 10)
    run.send(signal.SIGKILL)
    facts["kill_rc"] = run.finish()
    facts["kill_steps"] = s.checkpoint_steps(workdir)
    facts["kill_tmp"] = tmp_checkpoint_dirs(workdir, 9)
    facts["kill_last_logged"] = s.last_train_step(workdir)

    run = s.start(workdir, hooks={"ADC_TEST_STEP_SLEEP": "0.3"})
    # Stale lines of the killed run go when the resumed run starts; then wait for new ones.
    run.wait_until(lambda: "Resuming from step" in run.output)
    run.wait_until(lambda: s.last_train_step(workdir) >= 8)
    run.send(signal.SIGTERM)
    facts["term"], facts["term_rc"] = run, run.finish()
    facts["term_steps"] = s.checkpoint_steps(workdir)

    run = s.start(workdir)
    run.wait_until(lambda: STEPS in s.checkpoint_steps(workdir))
    run.send(signal.SIGKILL)  # training is complete; its final eval is tested in test_train.py
    run.finish()
    facts["last"] = run
    return workdir, facts


def test_sigkill_during_a_checkpoint_write_resumes_from_the_last_complete_one(interrupted_run):
    workdir, facts = interrupted_run
    assert facts["kill_rc"] == -signal.SIGKILL
    assert facts["kill_tmp"], "the kill should land while checkpoint 9 is being written"
    assert facts["kill_steps"] == [3, 6] and facts["kill_last_logged"] >= 10
    # The next run restored checkpoint 6, never the unfinished 9, and removed the leftover.
    assert "Resuming from step 6 " in facts["term"].output
    assert not tmp_checkpoint_dirs(workdir)


def test_sigterm_saves_at_the_next_step_and_exits_0(interrupted_run):
    _, facts = interrupted_run
    out = facts["term"].output
    assert facts["term_rc"] == 0, out[-3000:]
    assert "SIGTERM received" in out
    stopped = int(out.split("Stopped by SIGTERM at step ")[1].split(";")[0])
    assert 8 <= stopped < STEPS and max(facts["term_steps"]) == stopped
    assert "Run the same command again to resume" in out
    assert f"Resuming from step {stopped} " in facts["last"].output


def test_interrupted_run_equals_uninterrupted_run(interrupted_run, smoke_setup, reference_run):
    workdir, _ = interrupted_run
    smoke_setup.assert_same_run(workdir, reference_run)


# ---------------------------------------------------------------------- config and workdir errors


@pytest.fixture(scope="module")
def failed_starts(smoke_setup, reference_run, tmp_path_factory):
    """Runs that must fail before anything is built, started all at once (each only imports)."""
    root = tmp_path_factory.mktemp("failed_starts")
    a_file = root / "a_file"
    a_file.write_text("not a directory")
    cases = {
        "devices": (
            ["--config.train.batch_size=7"],
            {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
        ),
        "sdd": (["--config.model.sdd=middle"], {}),
        "attention": (["--config.model.attention=local"], {}),
        "clip": (["--config.data.clip_seconds=0.05"], {}),
        "dataset": (
            [
                "--config.data.name=audio_diff_caps",
                "--config.data.audio_dir=/no/wavs",
                "--config.data.csv_dir=/no/csvs",
            ],
            {},
        ),
        "unknown_key": (["--config.train.no_such_key=1"], {}),
        "negative": (["--config.train.batch_size=-3"], {}),
        "wrong_type": (["--config.train.batch_size=many"], {}),
        "model_mismatch": (["--config.model.d_model=64", "--config.model.num_heads=4"], {}),
        "workdir_is_file": ([], {}),
    }
    workdirs = {name: str(root / name) for name in cases}
    workdirs["model_mismatch"] = reference_run
    workdirs["workdir_is_file"] = str(a_file / "run")
    with open(os.path.join(reference_run, "config.json")) as f:
        reference_config = f.read()
    procs = {}
    for name, (args, env) in cases.items():
        procs[name] = (
            time.time(),
            subprocess.Popen(
                smoke_setup.command(workdirs[name], *args),
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                env=dict(smoke_setup.env, **env),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
    results = {}
    for name, (start, proc) in procs.items():
        out, _ = proc.communicate(timeout=300)
        results[name] = {
            "rc": proc.returncode,
            "out": out,
            "seconds": time.time() - start,
            "workdir": workdirs[name],
        }
    with open(os.path.join(reference_run, "config.json")) as f:
        results["model_mismatch"]["config_after"] = f.read()
    results["model_mismatch"]["config_before"] = reference_config
    return results


EXPECTED_MESSAGES = {
    "devices": ["config.train.batch_size=7", "divisible by the number of devices (2)", "try 6"],
    "sdd": ["config.model.sdd='middle'", "'none', 'early', 'late'"],
    "attention": ["config.model.attention='local'", "'cross', 'full'"],
    "clip": ["config.data.clip_seconds=0.05", "too short", "at least 0.070 s"],
    "dataset": ["config.data.audio_dir='/no/wavs'", "does not exist"],
    "unknown_key": ["--config.train.no_such_key", "does not have", "adc_jax/config.py"],
    "negative": ["config.train.batch_size=-3", "positive integer"],
    "wrong_type": ["--config.train.batch_size=many", "Flags error"],
    "model_mismatch": [
        "different model config",
        "model.d_model: checkpoint=32, config=64",
        "model.num_heads: checkpoint=2, config=4",
        "new --workdir",
    ],
    "workdir_is_file": ["cannot write to the workdir", "Choose a writable --workdir"],
}


@pytest.mark.parametrize("case", sorted(EXPECTED_MESSAGES))
def test_bad_start_fails_before_building_anything(failed_starts, case):
    result = failed_starts[case]
    # 2: the config (or the command line) must change; 1: the workdir is unusable.
    assert result["rc"] == (1 if case == "workdir_is_file" else 2), result["out"][-2000:]
    for text in EXPECTED_MESSAGES[case]:
        assert text in result["out"], (text, result["out"][-2000:])
    assert "Traceback" not in result["out"]
    # Neither data nor model was built, so nothing was compiled.
    assert "Model:" not in result["out"] and "Vocabulary:" not in result["out"]
    if case == "model_mismatch":  # the trained workdir is left exactly as it was
        assert result["config_after"] == result["config_before"]
    elif case != "workdir_is_file":
        assert not os.path.exists(os.path.join(result["workdir"], "vocab.json"))


# ---------------------------------------------------------------------- non-finite steps
# The real compiled step, fed a state whose decoder bias is NaN at chosen steps: the loss and
# the gradients become NaN there, and the step must leave the state as it was. The test puts the
# true bias back afterwards, so the following steps run on clean parameters.

POISONED = "['model']['decoder']['final_norm']['bias'].value"


def _instrument_step(monkeypatch, *, nan_at=(), sigterm_at=None) -> None:
    real_jit = step_lib.jit_train_step

    def jit_train_step(ts, config, mesh):
        compiled = real_jit(ts, config, mesh)

        def run_step(rng_state, state, batch):
            step = int(jax.device_get(state["optimizer"]["step"][...])) + 1
            kept = {}
            if step in nan_at:

                def poison(path, x):
                    if jax.tree_util.keystr(path) == POISONED:
                        kept["bias"] = x
                        return x * np.float32("nan")
                    return x

                state = jax.tree_util.tree_map_with_path(poison, state)
                assert kept, "no parameter named " + POISONED
            new_state, metrics = compiled(rng_state, state, batch)
            if kept:
                new_state = jax.tree_util.tree_map_with_path(
                    lambda p, x: kept["bias"] if jax.tree_util.keystr(p) == POISONED else x,
                    new_state,
                )
            if step == sigterm_at:
                signal.raise_signal(signal.SIGTERM)  # caught by loop.StopRequested
            return new_state, metrics

        return run_step

    monkeypatch.setattr(step_lib, "jit_train_step", jit_train_step)


def test_nonfinite_step_stops_naming_step_and_terms_after_the_last_good_checkpoint(
    smoke_setup, monkeypatch, tmp_path
):
    config = smoke_setup.config()
    config.train.log_every = 2  # the NaN of step 5 is seen when step 6 is logged
    _instrument_step(monkeypatch, nan_at={5})
    workdir = str(tmp_path / "run")
    with pytest.raises(loop.NonFiniteError) as info:
        train.train_and_evaluate(config, workdir)
    message = str(info.value)
    for text in (
        "at step 5 ",
        "caption_loss=nan",
        "similar_loss=",
        "grad_norm=nan",
        "non-finite: ",
        "last good checkpoint is step 3",
        "nonfinite=skip",
    ):
        assert text in message, (text, message)
    assert smoke_setup.checkpoint_steps(workdir) == [3]
    assert not tmp_checkpoint_dirs(workdir)
    assert smoke_setup.last_train_step(workdir) == 4


def test_nonfinite_skip_counts_the_step_and_keeps_the_count_on_resume(
    smoke_setup, monkeypatch, tmp_path
):
    config = smoke_setup.config()
    config.train.nonfinite = "skip"
    workdir = str(tmp_path / "run")
    _instrument_step(monkeypatch, nan_at={5}, sigterm_at=7)
    result = train.train_and_evaluate(config, workdir)
    assert result["stopped_at"] == 7 and result["signal"] == "SIGTERM"
    lines = smoke_setup.train_lines(workdir)
    assert [lines[s]["train/skipped_steps"] for s in range(1, 8)] == [0, 0, 0, 0, 1, 1, 1]
    assert all(np.isfinite(v) for v in lines[7].values())
    ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"), keep=3, async_save=False
    )
    assert ckpt.read_meta(7)["skipped_steps"] == 1
    ckpt.close()
    _instrument_step(monkeypatch, sigterm_at=8)
    result = train.train_and_evaluate(config, workdir)
    assert result["stopped_at"] == 8
    assert smoke_setup.train_lines(workdir)[8]["train/skipped_steps"] == 1
    state = smoke_setup.state(workdir, 8)
    assert all(np.isfinite(v).all() for v in state.values() if v.dtype.kind == "f")


# ---------------------------------------------------------------------- disk full, unwritable dir


def test_disk_full_during_a_checkpoint_is_reported_and_keeps_the_previous_one(
    smoke_setup, monkeypatch, tmp_path
):
    from orbax.checkpoint._src.path import atomicity

    real_finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self, *args, **kwargs):
        if self._final_path.name == "6":
            raise OSError(errno.ENOSPC, "No space left on device")
        return await real_finalize(self, *args, **kwargs)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", finalize)
    workdir, config = str(tmp_path / "run"), smoke_setup.config()
    os.makedirs(workdir)
    rundir.write_config(config, workdir)  # as main does; load_trained reads it back below
    with pytest.raises(checkpointing.CheckpointError) as info:
        train.train_and_evaluate(config, workdir)
    message = str(info.value)
    for text in (
        "checkpoint 6",
        "No space left on device",
        "Free disk space",
        "previous checkpoint (step 3)",
        "is intact",
        "run the same command again",
    ):
        assert text in message, (text, message)
    assert smoke_setup.checkpoint_steps(workdir) == [3]
    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", real_finalize)
    trained = rundir.load_trained(workdir)
    assert trained.step == 3
    leaves = jax.tree.leaves(jax.device_get(trained.train_state.state))
    assert all(np.isfinite(x).all() for x in leaves if np.asarray(x).dtype.kind == "f")


def _tiny_state():
    return nnx.State({"w": jax.numpy.arange(4.0)})


def test_failed_write_names_step_and_cause_and_earlier_checkpoint_restores(tmp_path):
    ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"), keep=3)
    ckpt.save(1, _tiny_state(), {"pos": 1}, {"model": {}})
    ckpt.wait()

    def unwritable(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "ckpt"))

    real_save, ckpt.manager.save = ckpt.manager.save, unwritable
    with pytest.raises(checkpointing.CheckpointError) as info:
        ckpt.save(2, _tiny_state(), {"pos": 2}, {"model": {}})
    message = str(info.value)
    assert "writing checkpoint 2" in message and "Permission denied" in message
    assert "fix the directory's permissions" in message
    assert "previous checkpoint (step 1)" in message
    ckpt.manager.save = real_save
    restored, data, meta = ckpt.restore(1, _tiny_state(), {"model": {}})
    assert data == {"pos": 1} and meta["step"] == 1
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(4.0))
    ckpt.close()


def test_checkpoint_dir_under_a_file_says_choose_a_writable_workdir(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(checkpointing.CheckpointError, match="Choose a writable --workdir"):
        checkpointing.Checkpointer(str(tmp_path / "file" / "checkpoints"), keep=1)


def test_check_compatible_lists_every_differing_field():
    saved = {"model": {"model.d_model": 32, "model.sdd": "late"}, "vocab_size": 96}
    current = {"model": {"model.d_model": 64, "model.sdd": "none"}, "vocab_size": 90}
    with pytest.raises(Exception, match="model.d_model: checkpoint=32") as info:
        checkpointing.check_compatible(saved, current, "/ckpt")
    assert "model.sdd: checkpoint='late', config='none'" in str(info.value)
    assert "vocab_size: checkpoint=96" in str(info.value)


# ---------------------------------------------------------------------- degenerate eval inputs


def _spice_dir_whose_java_fails(tmp_path) -> str:
    """A pycocoevalcap spice folder with the jars 'installed' but not runnable."""
    (tmp_path / "lib").mkdir(exist_ok=True)
    for jar in captioning.CORENLP_JARS:
        (tmp_path / "lib" / jar).write_bytes(b"")
    (tmp_path / captioning.SPICE_JAR).write_bytes(b"not a jar")
    return str(tmp_path)


def test_silent_clips_empty_and_unknown_captions_still_score(
    smoke_setup, reference_run, monkeypatch, tmp_path
):
    trained = rundir.load_trained(reference_run)
    config, ts, mesh, vocab = trained.config, trained.train_state, trained.mesh, trained.vocab
    real = registry.load_builder(config).as_data_source("eval")
    n = pipeline.clip_samples(config)
    silent = np.zeros((n,), np.int16)
    records = [
        dict(real[0], key=b"silent_pair", audio1=silent, audio2=silent, captions=[b""]),
        dict(
            real[1],
            key=b"unknown_words",
            audio1=silent,
            audio2=silent,
            captions=[b"zzqx blorf wuggle"],
        ),
        *(real[i] for i in range(2, 5)),
    ]
    split = load_eval_split(records)

    decode_fn = step_lib.jit_decode(
        ts, mesh, config.eval.decode, config.eval.beam_size, config.eval.length_penalty
    )
    nbest = evaluate.decode_split(
        decode_fn,
        ts.rng_state,
        ts.state,
        split,
        config,
        mesh,
        vocab,
        batch_size=config.eval.batch_size,
    )
    assert set(nbest) == set(split.keys)
    assert all(np.isfinite(score) for v in nbest.values() for _, score in v)
    predictions = {k: v[0][0] for k, v in nbest.items()}
    predictions[split.keys[2]] = ""  # an empty prediction
    predictions[split.keys[3]] = "<unk> <unk>"  # a prediction of only unknown words

    spice_dir = _spice_dir_whose_java_fails(tmp_path)
    monkeypatch.setattr(captioning, "_spice_dir", lambda: spice_dir)
    result = score_predictions(predictions, split)
    scores = result["scores"]
    assert all(isinstance(scores[k], float) and np.isfinite(scores[k]) for k in METRIC_KEYS)
    assert scores["SPICE"] is None and scores["SPIDEr"] is None
    assert "SPICE failed" in scores["notes"]["SPICE"]  # reported, not raised
    assert scores["num_empty_references"] == 1 and scores["num_empty_predictions"] >= 1
    assert result["difference_accuracy"] is not None
    json.dumps(result)

    # One training step on silent clips with a caption of unknown words stays finite.
    ids, _ = vocab.encode("zzqx blorf", config.data.max_caption_tokens)
    tokens = np.full((config.train.batch_size, config.data.max_caption_tokens), PAD, np.int32)
    tokens[:, : len(ids)] = ids
    b = config.train.batch_size
    batch = {
        "wav1": np.zeros((b, n), np.int16),
        "wav2": np.zeros((b, n), np.int16),
        "wav1_len": np.full((b,), n, np.int32),
        "wav2_len": np.full((b,), n, np.int32),
        "tokens": tokens,
    }
    train_step = step_lib.jit_train_step(ts, config, mesh)
    _, metrics = train_step(ts.rng_state, ts.state, sharding_lib.global_batch(batch, mesh))
    metrics = jax.device_get(metrics)
    assert metrics["finite"] == 1
    assert all(np.isfinite(v) for v in metrics.values())


def test_orbax_reads_back_only_complete_checkpoints(tmp_path):
    """The property exact resume relies on: an unfinished write is invisible to latest_step."""
    ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"), keep=3)
    ckpt.save(1, _tiny_state(), {"pos": 1}, {"model": {}})
    ckpt.wait()
    ckpt.close()
    os.makedirs(tmp_path / "ckpt" / "2.orbax-checkpoint-tmp-123" / "state")
    manager = ocp.CheckpointManager(str(tmp_path / "ckpt"))
    assert manager.latest_step() == 1
    manager.close()
