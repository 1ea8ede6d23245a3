"""Tests of `adc_jax.train_state`: the non-finite fallback, the learning-rate schedule, the
weight-decay mask, placing a state on the mesh, seeding, and the jitted step's donation."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from adc_jax import sharding as sharding_lib
from adc_jax import train_state


class Tiny(nnx.Module):
    """A matrix, a bias, a LayerNorm (1-D scale and bias) and dropout: the kinds of leaves a
    real train state has."""

    def __init__(self, rngs: nnx.Rngs):
        self.dense = nnx.Linear(3, 4, rngs=rngs)
        self.norm = nnx.LayerNorm(4, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x, *, train: bool = False):
        return self.drop(self.norm(self.dense(x)), deterministic=not train)


def build(seed: int = 0, tx: optax.GradientTransformation | None = None) -> dict[str, nnx.Module]:
    model = Tiny(train_state.init_rngs(seed))
    return {"model": model, "optimizer": nnx.Optimizer(model, tx or optax.sgd(0.1), wrt=nnx.Param)}


# Host copies, not views: on CPU np.asarray can alias a device buffer, and JAX does not donate a
# buffer that a NumPy view still references.
def leaves(tree) -> list[np.ndarray]:
    return [np.array(x, copy=True) for x in jax.tree.leaves(tree)]


def params_of(state) -> dict[str, np.ndarray]:
    flat = nnx.to_flat_state(nnx.filter_state(nnx.State(state["model"]), nnx.Param))
    return {"/".join(map(str, path)): np.array(var[...], copy=True) for path, var in flat}


# ---------------------------------------------------------------------------- keep_if_finite


@pytest.fixture(name="old_and_new")
def old_and_new_fixture():
    """(old, new) states {"model", "optimizer"}: new = old + 1 everywhere, both at step 5."""
    _, _, old = train_state.split_state(build())
    old["optimizer"]["step"][...] = jnp.uint32(5)
    new = jax.tree.map(lambda x: x + 1, old)
    return old, new


@pytest.mark.parametrize("jitted", [False, True])
def test_keep_if_finite_takes_the_new_state_when_finite(old_and_new, jitted):
    old, new = old_and_new
    fn = jax.jit(train_state.keep_if_finite) if jitted else train_state.keep_if_finite
    kept = fn(jnp.bool_(True), new, old, jnp.uint32(5))
    assert params_of(kept).keys() == params_of(new).keys()
    for key, value in params_of(new).items():
        np.testing.assert_array_equal(params_of(kept)[key], value)
    assert int(kept["optimizer"]["step"][...]) == 6


@pytest.mark.parametrize("jitted", [False, True])
def test_keep_if_finite_keeps_the_old_state_but_advances_the_step(old_and_new, jitted):
    old, new = old_and_new
    old_params = params_of(old)
    fn = jax.jit(train_state.keep_if_finite) if jitted else train_state.keep_if_finite
    kept = fn(jnp.bool_(False), new, old, jnp.uint32(5))
    for key, value in old_params.items():
        np.testing.assert_array_equal(params_of(kept)[key], value)
    # The step moves on (data position and dropout stream stay aligned with it) ...
    assert int(kept["optimizer"]["step"][...]) == 6
    # ... without touching the inputs: `old` is what a later fallback would use.
    assert int(old["optimizer"]["step"][...]) == 5
    assert int(new["optimizer"]["step"][...]) == 6
    for key, value in old_params.items():
        np.testing.assert_array_equal(params_of(old)[key], value)


def test_keep_if_finite_on_a_plain_dict_of_variables():
    old = {
        "model": {"w": nnx.Param(jnp.zeros((2, 2)))},
        "optimizer": {"step": nnx.OptState(jnp.uint32(3))},
    }
    new = {
        "model": {"w": nnx.Param(jnp.full((2, 2), jnp.nan))},
        "optimizer": {"step": nnx.OptState(jnp.uint32(3))},
    }
    kept = jax.jit(train_state.keep_if_finite)(jnp.bool_(False), new, old, jnp.uint32(3))
    np.testing.assert_array_equal(kept["model"]["w"][...], np.zeros((2, 2)))
    assert int(kept["optimizer"]["step"][...]) == 4
    kept = jax.jit(train_state.keep_if_finite)(jnp.bool_(True), new, old, jnp.uint32(3))
    assert np.isnan(np.asarray(kept["model"]["w"][...])).all()
    assert int(kept["optimizer"]["step"][...]) == 4


# ------------------------------------------------------------------------------- schedule


def schedule(num_steps: int, warmup: int, final: float, lr: float = 1e-3) -> optax.Schedule:
    train = ml_collections.ConfigDict(
        dict(learning_rate=lr, num_steps=num_steps, warmup_steps=warmup, final_lr_fraction=final)
    )
    return train_state.warmup_cosine_schedule(train)


def test_warmup_cosine_schedule_shape():
    s = schedule(num_steps=100, warmup=10, final=0.1)
    assert float(s(0)) == 0.0
    assert float(s(5)) == pytest.approx(0.5e-3)
    assert float(s(10)) == pytest.approx(1e-3)
    assert float(s(100)) == pytest.approx(0.1 * 1e-3)
    assert float(s(1000)) == pytest.approx(0.1 * 1e-3)  # stays at the floor
    values = [float(s(k)) for k in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # decays monotonically
    # Half-way through the decay: the cosine's mid-point between peak and floor.
    assert float(s(55)) == pytest.approx((1e-3 + 1e-4) / 2, rel=1e-5)


def test_warmup_cosine_schedule_without_warmup_starts_at_the_peak():
    s = schedule(num_steps=50, warmup=0, final=0.0)
    assert float(s(0)) == pytest.approx(1e-3)
    assert float(s(50)) == pytest.approx(0.0, abs=1e-12)


def test_final_fraction_one_without_warmup_is_constant():
    s = schedule(num_steps=40, warmup=0, final=1.0, lr=3e-4)
    np.testing.assert_allclose([float(s(k)) for k in range(0, 60, 3)], 3e-4, rtol=1e-6)


def test_warmup_longer_than_the_run_is_shortened():
    """A warm-up of at least num_steps would never reach the peak: it ends one step early."""
    s = schedule(num_steps=5, warmup=50, final=0.5)
    assert float(s(0)) == 0.0
    assert float(s(4)) == pytest.approx(1e-3)
    assert float(s(5)) == pytest.approx(0.5e-3)


@pytest.mark.parametrize(("num_steps", "warmup"), [(20, 0), (1, 5)])
def test_schedule_without_warmup_logs_no_optax_warning(caplog, num_steps, warmup):
    caplog.set_level(logging.DEBUG)
    s = schedule(num_steps=num_steps, warmup=warmup, final=0.1)
    assert float(s(0)) == pytest.approx(1e-3)
    assert not [r for r in caplog.records if "transition_steps" in r.getMessage()]
    # (optax's own warm-up schedule does log it for a warm-up of 0 steps.)
    optax.warmup_cosine_decay_schedule(0.0, 1e-3, 0, num_steps, 1e-4)
    assert [r for r in caplog.records if "transition_steps" in r.getMessage()]


# ----------------------------------------------------------------------------- decay_mask


def test_decay_mask_marks_matrices_only():
    params = {
        "kernel": jnp.zeros((3, 4)),
        "conv": jnp.zeros((3, 3, 1, 8)),
        "bias": jnp.zeros((4,)),
        "scalar": jnp.zeros(()),
    }
    assert train_state.decay_mask(params) == {
        "kernel": True,
        "conv": True,
        "bias": False,
        "scalar": False,
    }


def test_adamw_with_decay_mask_shrinks_kernels_only():
    """Zero gradients: Adam's update is 0, so only weight decay moves a parameter."""
    parts = build(tx=optax.adamw(0.1, weight_decay=0.5, mask=train_state.decay_mask))
    model, optimizer = parts["model"], parts["optimizer"]
    before = params_of({"model": nnx.state(model)})
    grads = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
    optimizer.update(model, grads)
    after = params_of({"model": nnx.state(model)})
    assert set(before) == {"dense/kernel", "dense/bias", "norm/scale", "norm/bias"}
    np.testing.assert_allclose(after["dense/kernel"], before["dense/kernel"] * (1 - 0.1 * 0.5))
    for key in ("dense/bias", "norm/scale", "norm/bias"):
        np.testing.assert_array_equal(after[key], before[key])


# ----------------------------------------------------------------- placement and seeding


@pytest.fixture(scope="module", name="mesh")
def mesh_fixture():
    return sharding_lib.create_mesh(jax.devices()[:1])


def test_place_on_mesh_replicates_the_state_on_the_mesh(mesh):
    ts = train_state.place_on_mesh(lambda: build(seed=3), mesh)
    assert isinstance(ts.graphdef, nnx.GraphDef)
    for tree in (ts.state, ts.rng_state):
        arrays = jax.tree.leaves(tree)
        assert arrays
        for x in arrays:
            assert isinstance(x, jax.Array)
            assert x.sharding.is_equivalent_to(NamedSharding(mesh, P()), x.ndim)
    # The shardings the jitted step will use are those the state was placed with.
    for x, s in zip(jax.tree.leaves(ts.state), jax.tree.leaves(ts.shardings), strict=True):
        assert x.sharding == s
    # The same values as the modules built on the host.
    _, _, host = train_state.split_state(build(seed=3))
    for placed, want in zip(leaves(ts.state), leaves(host), strict=True):
        np.testing.assert_array_equal(placed, want)
    # Dropout streams are left out of the state (checkpoints do not hold them).
    flat = [p for p, _ in nnx.to_flat_state(ts.state)]
    assert not any("rngs" in map(str, path) for path in flat)
    assert train_state.parameter_count(ts.state["model"]) == 3 * 4 + 4 + 4 + 4


def test_init_rngs_same_seed_same_parameters():
    same = [params_of(train_state.split_state(build(seed=7))[2]) for _ in range(2)]
    other = params_of(train_state.split_state(build(seed=8))[2])
    for key in same[0]:
        np.testing.assert_array_equal(same[0][key], same[1][key])
    assert not np.array_equal(same[0]["dense/kernel"], other["dense/kernel"])


def test_init_rngs_dropout_stream_differs_from_the_params_stream():
    rngs = train_state.init_rngs(0)
    a, b = rngs.params(), rngs.dropout()
    assert not np.array_equal(jax.random.key_data(a), jax.random.key_data(b))
    again = train_state.init_rngs(0)
    np.testing.assert_array_equal(jax.random.key_data(again.dropout()), jax.random.key_data(b))


# ----------------------------------------------------------------------------- jit_step


def sgd_step(graphdef, rng_state, state, batch):
    """A pure step like the trainers': loss, update, non-finite fallback."""
    parts = nnx.merge(graphdef, rng_state, state, copy=True)
    model, optimizer = parts["model"], parts["optimizer"]
    step = optimizer.step[...]

    def loss_fn(m):
        return jnp.mean((m(batch["x"], train=True) - batch["y"]) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    finite = jnp.isfinite(loss)
    new_state = train_state.keep_if_finite(finite, train_state.split_state(parts)[2], state, step)
    return new_state, {"loss": loss, "finite": finite.astype(jnp.float32)}


def test_jit_step_donates_the_state_and_replicates_metrics(mesh):
    ts = train_state.place_on_mesh(lambda: build(seed=1), mesh)
    step = train_state.jit_step(lambda r, s, b: sgd_step(ts.graphdef, r, s, b), ts, mesh)
    rng = np.random.default_rng(0)
    batch = sharding_lib.global_batch(
        {"x": rng.normal(size=(4, 3)).astype(np.float32), "y": np.ones((4, 4), np.float32)},
        mesh,
    )
    before = params_of(ts.state)
    old_leaves = jax.tree.leaves(ts.state)
    new_state, metrics = step(ts.rng_state, ts.state, batch)
    # Donated: the input buffers are gone, reused for the output.
    assert all(x.is_deleted() for x in old_leaves)
    assert not any(x.is_deleted() for x in jax.tree.leaves(new_state))
    for x, s in zip(jax.tree.leaves(new_state), jax.tree.leaves(ts.shardings), strict=True):
        assert x.sharding.is_equivalent_to(s, x.ndim)
    for value in metrics.values():
        assert value.sharding.is_fully_replicated
        assert value.sharding.is_equivalent_to(sharding_lib.replicated(mesh), value.ndim)
    assert float(metrics["finite"]) == 1.0 and np.isfinite(float(metrics["loss"]))
    assert int(new_state["optimizer"]["step"][...]) == 1
    assert not np.array_equal(params_of(new_state)["dense/kernel"], before["dense/kernel"])
    # A second call takes the returned state (and donates it in turn).
    newer, _ = step(ts.rng_state, new_state, batch)
    assert int(newer["optimizer"]["step"][...]) == 2
    assert all(x.is_deleted() for x in jax.tree.leaves(new_state))
    # A non-finite batch: the parameters stay, the step advances.
    kept = params_of(newer)
    nan_batch = sharding_lib.global_batch(
        {"x": np.full((4, 3), np.nan, np.float32), "y": np.ones((4, 4), np.float32)}, mesh
    )
    newest, metrics = step(ts.rng_state, newer, nan_batch)
    assert float(metrics["finite"]) == 0.0
    assert int(newest["optimizer"]["step"][...]) == 3
    for key, value in kept.items():
        np.testing.assert_array_equal(params_of(newest)[key], value)
