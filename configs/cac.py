"""Cross-attention-concentrated (CAC) encoder, no SDD.

Sizes: `configs/cac.py` (paper scale), `:quick` (2 CPU cores, minutes), `:smoke` (tests).
"""

from adc_jax.config import experiment_config


def get_config(arg=None):
    return experiment_config(arg, name="cac", attention="cross", sdd="none")
