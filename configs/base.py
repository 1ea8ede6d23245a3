"""Base config: the defaults shared by every experiment (CAC encoder + late SDD).

The field definitions, with a comment above each, live in `adc_jax/config.py` so that every
experiment file and the notebook share one source. Sizes: `configs/base.py` (paper scale),
`configs/base.py:quick` (2 CPU cores, minutes), `configs/base.py:smoke` (seconds, tests).
"""

from adc_jax.config import base_config


def get_config(arg=None):
    return base_config(arg)
