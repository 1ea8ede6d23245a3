"""adc_jax switches XLA's YNNPACK fusions off on CPU at import, unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from adc_jax import xla_cpu

# Prints XLA_FLAGS as adc_jax left it and whether a compiled dot + ReLU + sum uses a YNN fusion.
PROBE = """
import os, jax, jax.numpy as jnp
import adc_jax
hlo = jax.jit(lambda p, w: jnp.sum(jax.nn.relu(p @ w))).lower(
    jnp.ones((256, 16)), jnp.ones((16, 64))).compile().as_text()
print(repr(os.environ.get("XLA_FLAGS", "")), "ynn_fusion" in hlo)
"""


def _probe(**env_changes) -> tuple[str, bool]:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_cpu.OPT_OUT_ENV)}
    env.update(env_changes)
    out = (
        subprocess.run(
            [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .rsplit(" ", 1)
    )
    return eval(out[0]), out[1] == "True"  # noqa: S307 - our own repr


needs_checked_jaxlib = pytest.mark.skipif(
    xla_cpu._jaxlib_version() not in xla_cpu.CHECKED_JAXLIB,
    reason="the flag is only applied on the jaxlib versions checked to define it",
)


@needs_checked_jaxlib
def test_import_switches_ynn_fusions_off_and_keeps_other_flags():
    flags, uses_ynn = _probe(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert flags == f"--xla_force_host_platform_device_count=2 {xla_cpu.YNN_FLAG}="
    assert not uses_ynn


@needs_checked_jaxlib
def test_opt_out_and_the_users_own_setting_are_respected():
    flags, uses_ynn = _probe(**{xla_cpu.OPT_OUT_ENV: "0"})
    assert flags == "" and uses_ynn  # XLA's default: the fusion is there without the flag
    own = f"{xla_cpu.YNN_FLAG}=LIBRARY_FUSION_TYPE_DOT"
    flags, _ = _probe(XLA_FLAGS=own)
    assert flags == own


def test_unchecked_jaxlib_is_left_alone(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv(xla_cpu.OPT_OUT_ENV, raising=False)
    monkeypatch.setattr(xla_cpu, "_jaxlib_version", lambda: (9, 99))
    assert not xla_cpu.apply_cpu_defaults()
    assert "XLA_FLAGS" not in os.environ
