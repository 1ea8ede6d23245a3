"""adc_jax: audio difference captioning in JAX/Flax."""

from adc_jax import xla_cpu

xla_cpu.apply_cpu_defaults()
