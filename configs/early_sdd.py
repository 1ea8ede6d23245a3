"""CAC encoder with SDD on the encoder input (early).

Sizes: `configs/early_sdd.py` (paper scale), `:quick` (2 CPU cores, minutes), `:smoke` (tests).
"""

from adc_jax.config import experiment_config


def get_config(arg=None):
    return experiment_config(arg, name="early_sdd", attention="cross", sdd="early")
