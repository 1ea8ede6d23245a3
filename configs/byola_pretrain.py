"""BYOL-A self-supervised pretraining of the AudioNTT2020 encoder (`python -m adc_jax.pretrain`).

Sizes: `configs/byola_pretrain.py` (paper scale), `:quick` (2 CPU cores), `:smoke` (tests). The
encoder sizes match the captioner's configs of the same size, so the exported `WORKDIR/encoder`
initialises e.g. `configs/late_sdd.py:quick` through `--config.model.byola_init=WORKDIR/encoder`.
The fields, with a comment above each, live in `adc_jax/pretrain/config.py`.
"""

from adc_jax.pretrain.config import pretrain_config


def get_config(arg=None):
    return pretrain_config(arg)
