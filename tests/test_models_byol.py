"""Tests of BYOL's loss (`adc_jax.models.byol`); the networks are tested with the pretraining
step (tests/test_pretrain_step.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from adc_jax.models import byol


def test_byol_loss_is_symmetric_and_zero_for_matching_predictions():
    rng = np.random.default_rng(0)
    p1, p2, z1, z2 = (jnp.asarray(rng.normal(size=(7, 16)), jnp.float32) for _ in range(4))
    loss = byol.byol_loss(p1, p2, z1, z2)
    assert float(byol.byol_loss(p2, p1, z2, z1)) == float(loss)  # the views swapped
    assert 0.0 < float(loss) < 8.0
    # Predictions equal to (positive multiples of) the other view's projections: loss 0.
    assert abs(float(byol.byol_loss(3.0 * z2, 0.5 * z1, z1, z2))) < 1e-6
    # Orthogonal: 2 per term; opposite: 4 per term.
    e1, e2 = jnp.eye(16)[:1], jnp.eye(16)[1:2]
    assert float(byol.byol_loss(e1, e1, e2, e2)) == pytest.approx(4.0)
    assert float(byol.byol_loss(e1, -e2, e2, -e1)) == pytest.approx(8.0)
