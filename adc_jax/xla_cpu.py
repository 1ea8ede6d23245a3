"""XLA options for the CPU backend, applied when `adc_jax` is imported.

XLA's CPU compiler (jaxlib 0.9-0.10) hands dots, convolutions and the elementwise ops around them
to YNNPACK "library fusions" by default. On the 2-core x86 machines we train `:quick` on, those
fusions make the training step slower, not faster: the `:quick` step measured 1,130 ms with them
switched off against 1,401 ms with them on (AMD EPYC, 2 cores, `tools/benchmark_step.py`, block 1
as a phase matmul in both). So `apply_cpu_defaults` switches them off through `XLA_FLAGS`.

XLA reads `XLA_FLAGS` once, when JAX creates its first backend, so this only takes effect if no
computation ran before `adc_jax` was imported (it is a no-op otherwise). It changes nothing when:
  * `XLA_FLAGS` already sets `--xla_cpu_experimental_ynn_fusion_type` (the user's choice wins);
  * `ADC_JAX_XLA_CPU_DEFAULTS=0` is in the environment;
  * the installed jaxlib is not one of the versions checked to know the flag (an unknown flag in
    `XLA_FLAGS` aborts the process, so untested versions are left alone).
The flag only concerns the CPU backend; GPU and TPU compilation ignore it.
"""

from __future__ import annotations

import importlib.metadata
import os

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# jaxlib (major, minor) versions whose XLA is known to define YNN_FLAG.
CHECKED_JAXLIB = ((0, 9), (0, 10))
OPT_OUT_ENV = "ADC_JAX_XLA_CPU_DEFAULTS"


def _jaxlib_version() -> tuple[int, int] | None:
    try:
        parts = importlib.metadata.version("jaxlib").split(".")
        return int(parts[0]), int(parts[1])
    except (importlib.metadata.PackageNotFoundError, ValueError, IndexError):
        return None


def apply_cpu_defaults() -> bool:
    """Adds `--xla_cpu_experimental_ynn_fusion_type=` (no YNNPACK fusions) to `XLA_FLAGS`.

    Returns whether the flag was added.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get(OPT_OUT_ENV, "1") == "0" or YNN_FLAG in flags:
        return False
    if _jaxlib_version() not in CHECKED_JAXLIB:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}=".strip()
    return True
