"""Tests of `adc_jax.loop`: `StepLoop` and `restore_or_init`, driven by a fake step (a counter)
and a fake data iterator, with a real Checkpointer and MetricsWriter in tmp_path; the metrics
file's truncation on resume and the text of a non-finite step."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from adc_jax import checkpointing, loop
from adc_jax import sharding as sharding_lib
from adc_jax.train_state import TrainState

BATCH = 2 * jax.device_count()
META = {"model": {"model.size": 1}, "name": "loop_test"}


@pytest.fixture(scope="module", name="mesh")
def mesh_fixture():
    return sharding_lib.create_mesh()


def fake_step(rng_state, state, batch):
    """Adds 1 to the counter; the loss is the new count, NaN on a batch marked bad."""
    del rng_state
    count = state["model"]["count"][...] + 1
    bad = jnp.any(batch["bad"])
    new = jax.tree.map(lambda x: x, state)
    new["model"]["count"][...] = count
    new["optimizer"]["step"][...] = state["optimizer"]["step"][...] + 1
    metrics = {
        "loss": jnp.where(bad, jnp.nan, count),
        "grad_norm": jnp.float32(0.5),
        "finite": jnp.where(bad, 0.0, 1.0),
    }
    return new, metrics


@pytest.fixture(scope="module", name="step_fn")
def step_fn_fixture(mesh):
    """The fake step, jitted and donating its state like `train_state.jit_step` (compiled once
    for the module)."""
    replicated = sharding_lib.replicated(mesh)
    return jax.jit(
        fake_step,
        donate_argnums=(1,),
        in_shardings=(replicated, replicated, sharding_lib.batch_sharding(mesh)),
        out_shardings=(replicated, replicated),
    )


def fresh_state(mesh) -> TrainState:
    state = nnx.State(
        {
            "model": {"count": nnx.Param(jnp.float32(0.0))},
            "optimizer": {"step": nnx.OptState(jnp.uint32(0))},
        }
    )
    placed = sharding_lib.put_replicated(jax.device_get(state), mesh)
    return TrainState(graphdef=None, rng_state=nnx.State({}), state=placed, shardings=None)


def count_of(ts: TrainState) -> float:
    return float(ts.state["model"]["count"][...])


class FakeBatches:
    """Batch `pos` is {"x": pos, "bad": pos in bad}; the state is the position (JSON)."""

    def __init__(self, bad: tuple[int, ...] = (), events: list | None = None):
        self.pos, self.bad = 0, set(bad)
        self.events = events if events is not None else []

    def __iter__(self):
        return self

    def __next__(self):
        self.events.append(("read", self.pos))
        batch = {
            "x": np.full((BATCH,), self.pos, np.float32),
            "bad": np.full((BATCH,), self.pos in self.bad),
        }
        self.pos += 1
        return batch

    def get_state(self):
        return {"pos": self.pos}

    def set_state(self, state):
        self.pos = int(state["pos"])


def train_config(**overrides) -> ml_collections.ConfigDict:
    train = dict(
        batch_size=BATCH,
        num_steps=6,
        log_every=2,
        checkpoint_every=4,
        nonfinite="stop",
        keep_checkpoints=10,
    )
    train.update(overrides)
    return ml_collections.ConfigDict({"train": train})


class Recorder:
    """Hooks that record their calls in `events` (shared with the iterator and the saves)."""

    def __init__(self, events: list, due=lambda step: False, **extra):
        self.events = events
        self.hooks = loop.Hooks(
            finish=self.finish,
            after_save=lambda step: events.append(("after_save", step)),
            is_due=due,
            periodic=lambda step: events.append(("periodic", step)),
            **extra,
        )

    def finish(self, step, means):
        self.events.append(("finish", step, dict(means)))
        return {"finished_at": step}

    def named(self, name: str) -> list:
        return [e[1:] for e in self.events if e[0] == name]


def run_loop(workdir, mesh, step_fn, config, *, recorder=None, batches=None, stop=None):
    """Runs a StepLoop from the workdir's latest checkpoint (or step 0); returns (result,
    recorder, checkpointer, start). Every checkpoint save is recorded as ("save", step)."""
    events = [] if recorder is None else recorder.events
    recorder = recorder or Recorder(events)
    batches = batches or FakeBatches(events=events)
    checkpointer = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints
    )
    save = checkpointer.save

    def recorded_save(step, *args, **kwargs):
        events.append(("save", step))
        return save(step, *args, **kwargs)

    checkpointer.save = recorded_save
    writer = loop.MetricsWriter(str(workdir), enabled=True)
    try:
        start = loop.restore_or_init(checkpointer, fresh_state(mesh), META, lambda: batches)
        run = loop.Run(
            config, str(workdir), mesh, checkpointer, writer, stop or loop.StopRequested()
        )
        result = loop.StepLoop(
            run, start=start, step_fn=step_fn, hooks=recorder.hooks, unit="pairs"
        ).run()
    finally:
        writer.close()
        checkpointer.close(raise_errors=False)
    return result, recorder, checkpointer, start


def metrics_lines(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------------- a run


def test_a_run_logs_saves_and_finishes_once(tmp_path, mesh, step_fn):
    result, rec, checkpointer, start = run_loop(tmp_path, mesh, step_fn, train_config())
    assert result == {"finished_at": 6}
    assert count_of(start.train_state) == 6.0
    # Checkpoints every 4 steps and at the end; after_save right after each save.
    assert checkpointer.all_steps() == [4, 6]
    saves = [(e[0], e[1]) for e in rec.events if e[0] in ("save", "after_save")]
    assert saves == [("save", 4), ("after_save", 4), ("save", 6), ("after_save", 6)]
    # One metrics line per log_every steps, the mean of the steps since the previous one.
    lines = metrics_lines(tmp_path)
    assert [r["step"] for r in lines] == [2, 4, 6]
    assert [r["train/loss"] for r in lines] == [1.5, 3.5, 5.5]
    assert all(r["train/grad_norm"] == 0.5 and r["train/skipped_steps"] == 0.0 for r in lines)
    # Throughput, named after the unit (the first step, which compiles, is not timed).
    assert all(r["train/pairs_per_second"] > 0 for r in lines)
    assert not any("train/finite" in r for r in lines)
    # finish: once, with the last step and the means of the last log.
    (finish,) = rec.named("finish")
    assert finish[0] == 6
    assert finish[1] == {k[len("train/") :]: v for k, v in lines[-1].items() if k != "step"}
    assert rec.events[-1][0] == "finish"


def test_the_checkpoint_holds_the_state_and_data_position(tmp_path, mesh, step_fn):
    _, _, checkpointer, _ = run_loop(tmp_path, mesh, step_fn, train_config())
    reader = checkpointing.Checkpointer(
        checkpointer.directory, keep=None, async_save=False, create=False
    )
    try:
        for step in (4, 6):
            state, data, meta = reader.restore(step, fresh_state(mesh).state, META)
            assert float(state["model"]["count"][...]) == step
            assert int(state["optimizer"]["step"][...]) == step
            # The position after the last batch the model consumed, not the prefetched ones.
            assert data == {"pos": step}
            assert meta["step"] == step and meta["skipped_steps"] == 0
    finally:
        reader.close()


def test_periodic_runs_when_due_but_not_at_the_last_step(tmp_path, mesh, step_fn):
    events: list = []
    rec = Recorder(events, due=lambda step: step % 3 == 0)
    run_loop(tmp_path, mesh, step_fn, train_config(), recorder=rec)
    assert rec.named("periodic") == [(3,)]  # step 6 is the last: finish covers it
    # It runs between steps: after batch 3 was taken, before the final save.
    order = [e[0] for e in events]
    assert order.index("periodic") < order.index("finish")


def test_a_resumed_run_first_runs_the_periodic_work_due_at_its_step(tmp_path, mesh, step_fn):
    run_loop(tmp_path, mesh, step_fn, train_config(num_steps=4, checkpoint_every=2))
    events: list = []
    rec = Recorder(events, due=lambda step: step % 4 == 0)
    batches = FakeBatches(events=events)
    result, _, checkpointer, start = run_loop(
        tmp_path,
        mesh,
        step_fn,
        train_config(num_steps=8, checkpoint_every=2),
        recorder=rec,
        batches=batches,
    )
    assert start.step == 4 and result == {"finished_at": 8}
    # periodic(4) before any batch is read; not again at 8 (the last step).
    assert events[0] == ("periodic", 4)
    assert rec.named("periodic") == [(4,)]
    # The resumed run reads on from the restored position and continues the counter.
    assert [e[1] for e in events if e[0] == "read"][:4] == [4, 5, 6, 7]
    assert count_of(start.train_state) == 8.0
    assert checkpointer.all_steps() == [2, 4, 6, 8]
    # The metrics of both runs read as one.
    assert [r["step"] for r in metrics_lines(tmp_path)] == [2, 4, 6, 8]


def test_a_finished_run_resumed_runs_no_step(tmp_path, mesh, step_fn):
    run_loop(tmp_path, mesh, step_fn, train_config())
    events: list = []
    rec = Recorder(events, due=lambda step: True)
    result, _, _, start = run_loop(tmp_path, mesh, step_fn, train_config(), recorder=rec)
    assert start.step == 6 and result == {"finished_at": 6}
    assert not rec.named("periodic") and not rec.named("save")
    (finish,) = rec.named("finish")
    assert finish == (6, {})  # nothing was logged by this run


# ------------------------------------------------------------------------- non-finite steps


def test_a_non_finite_step_stops_the_run_naming_the_step(tmp_path, mesh, step_fn):
    events: list = []
    with pytest.raises(loop.NonFiniteError) as info:
        run_loop(
            tmp_path,
            mesh,
            step_fn,
            train_config(checkpoint_every=2),
            recorder=Recorder(events),
            batches=FakeBatches(bad=(2,), events=events),  # the batch of step 3
        )
    message = str(info.value)
    assert "Non-finite loss or gradient at step 3 (" in message
    assert "loss=nan" in message and "non-finite: loss" in message
    assert "the last good checkpoint is step 2" in message
    assert "--config.train.nonfinite=skip" in message
    assert not [e for e in events if e[0] == "finish"]
    assert [e[1] for e in events if e[0] == "save"] == [2]  # nothing saved after the bad step


def test_a_non_finite_step_is_counted_when_skipping(tmp_path, mesh, step_fn):
    events: list = []
    _, rec, checkpointer, _ = run_loop(
        tmp_path,
        mesh,
        step_fn,
        train_config(nonfinite="skip"),
        recorder=Recorder(events),
        batches=FakeBatches(bad=(2,), events=events),
    )
    lines = metrics_lines(tmp_path)
    assert [r["train/skipped_steps"] for r in lines] == [0.0, 1.0, 1.0]
    assert lines[1]["train/loss"] == 4.0  # the mean leaves the skipped step out
    (finish,) = rec.named("finish")
    assert finish[0] == 6 and finish[1]["skipped_steps"] == 1.0
    assert checkpointer.read_meta(6)["skipped_steps"] == 1
    # A resumed run carries the count on.
    checkpointer.close()
    _, _, _, start = run_loop(tmp_path, mesh, step_fn, train_config(nonfinite="skip"))
    assert start.skipped == 1


# ------------------------------------------------------------------------- stop requests


def test_a_stop_request_before_the_run_returns_at_once(tmp_path, mesh, step_fn):
    stop = loop.StopRequested()
    stop.signal_name = "SIGTERM"
    events: list = []
    rec = Recorder(events, stopped_info={"encoder_dir": "/somewhere/encoder"})
    batches = FakeBatches(events=events)
    result, _, checkpointer, start = run_loop(
        tmp_path, mesh, step_fn, train_config(), recorder=rec, batches=batches, stop=stop
    )
    assert result == {
        "stopped_at": 0,
        "signal": "SIGTERM",
        "checkpoint_dir": checkpointer.directory,
        "encoder_dir": "/somewhere/encoder",
    }
    assert events == []  # no batch read, no hook, no save
    assert batches.pos == 0 and count_of(start.train_state) == 0.0
    assert checkpointer.all_steps() == []


def test_a_stop_request_during_the_run_saves_at_the_next_step(tmp_path, mesh, step_fn):
    stop = loop.StopRequested()
    events: list = []

    def periodic(step):
        events.append(("periodic", step))
        stop.signal_name = "SIGINT"  # as the handler does

    rec = Recorder(events, due=lambda step: step == 2)
    rec.hooks.periodic = periodic
    result, _, checkpointer, start = run_loop(
        tmp_path, mesh, step_fn, train_config(), recorder=rec, stop=stop
    )
    assert result["stopped_at"] == 3 and result["signal"] == "SIGINT"
    assert checkpointer.all_steps() == [3]
    assert count_of(start.train_state) == 3.0
    assert not rec.named("finish")
    assert [r["step"] for r in metrics_lines(tmp_path)] == [2, 3]
    # The same command resumes from that checkpoint and finishes.
    result, _, _, start = run_loop(tmp_path, mesh, step_fn, train_config())
    assert start.step == 3 and result == {"finished_at": 6}
    assert count_of(start.train_state) == 6.0


# ------------------------------------------------------------------------- restore_or_init


def test_restore_or_init_on_an_empty_directory_starts_fresh(tmp_path, mesh):
    checkpointer = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), keep=2)
    batches = FakeBatches()
    batches.pos = 7  # a fresh iterator keeps its own position
    try:
        start = loop.restore_or_init(checkpointer, fresh_state(mesh), META, lambda: batches)
    finally:
        checkpointer.close()
    assert (start.step, start.skipped, start.meta) == (0, 0, META)
    assert start.train_iter is batches and batches.pos == 7
    assert count_of(start.train_state) == 0.0


def test_restore_or_init_restores_state_and_data_position(tmp_path, mesh, step_fn):
    run_loop(tmp_path, mesh, step_fn, train_config(num_steps=5, checkpoint_every=2))
    checkpointer = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), keep=2)
    batches = FakeBatches()
    try:
        start = loop.restore_or_init(checkpointer, fresh_state(mesh), META, lambda: batches)
        assert start.step == 5
        assert count_of(start.train_state) == 5.0
        assert int(start.train_state.state["optimizer"]["step"][...]) == 5
        assert batches.pos == 5
        # The restored arrays keep the placement of the state they were restored into.
        for x in jax.tree.leaves(start.train_state.state):
            assert x.sharding.is_equivalent_to(sharding_lib.replicated(mesh), x.ndim)
        # A checkpoint of another model is refused before anything is read.
        other = dict(META, model={"model.size": 2})
        with pytest.raises(checkpointing.ConfigError, match=r"model\.size: checkpoint=1"):
            loop.restore_or_init(checkpointer, fresh_state(mesh), other, FakeBatches)
    finally:
        checkpointer.close()


# ------------------------------------------------------------------------------- MetricsWriter


def _write_lines(path, lines: list[str]) -> None:
    with open(path, "w") as f:
        f.write("".join(lines))


def test_truncate_after_drops_later_lines_and_a_line_cut_by_a_kill(tmp_path):
    writer = loop.MetricsWriter(str(tmp_path), enabled=True)
    lines = [json.dumps({"step": s, "train/loss": float(s)}) + "\n" for s in range(1, 6)]
    lines.insert(3, json.dumps({"step": 3, "eval/CIDEr": 0.1}) + "\n")
    _write_lines(writer.path, [*lines, '{"step": 6, "train/lo'])
    writer.truncate_after(3)
    steps = [json.loads(x)["step"] for x in open(writer.path)]
    assert steps == [1, 2, 3, 3]
    writer.truncate_after(3, drop_eval_at_step=True)
    records = [json.loads(x) for x in open(writer.path)]
    assert [r["step"] for r in records] == [1, 2, 3] and "train/loss" in records[-1]
    writer.truncate_after(0)
    assert open(writer.path).read() == ""


def test_nonfinite_message_names_the_bad_terms():
    text = loop.format_terms(
        {
            "loss": np.float32("nan"),
            "caption_loss": np.float32("nan"),
            "similar_loss": np.float32(1.5),
            "finite": np.float32(0),
        }
    )
    assert "caption_loss=nan" in text and "similar_loss=1.5" in text and "finite=" not in text
    assert text.endswith("non-finite: caption_loss, loss")
