"""Baseline of the ablation: full self-attention encoder, no SDD.

Sizes: `configs/baseline.py` (paper scale), `:quick` (2 CPU cores, minutes), `:smoke` (tests).
"""

from adc_jax.config import experiment_config


def get_config(arg=None):
    return experiment_config(arg, name="baseline", attention="full", sdd="none")
