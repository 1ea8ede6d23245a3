"""CAC encoder with SDD on the encoder output (late): the paper's best.

Sizes: `configs/late_sdd.py` (paper scale), `:quick` (2 CPU cores, minutes), `:smoke` (tests).
"""

from adc_jax.config import experiment_config


def get_config(arg=None):
    return experiment_config(arg, name="late_sdd", attention="cross", sdd="late")
