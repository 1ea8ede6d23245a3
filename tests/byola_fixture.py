"""A small official-format BYOL-A checkpoint for the tests of byola.py and byola_weights.py.

Written with `tools/make_byola_fixture.py` (no torch needed) and converted with the real converter.
"""

from __future__ import annotations

from pathlib import Path

from tool_modules import load_tool

from adc_jax.models import byola_weights

REPO = Path(__file__).resolve().parents[1]
# Small but with every structural feature of the real net (64 mels, 3 blocks, 2-layer head).
CHANNELS, DIM, N_MELS = 8, 16, 64


fixture_tool = load_tool("make_byola_fixture")


def write_checkpoint(root: Path):
    """(path of a random official-format .pth in `root`, its state dict, converted dir)."""
    sd = fixture_tool.random_state_dict(dim=DIM, channels=CHANNELS, n_mels=N_MELS, seed=0)
    pth = root / "AudioNTT2020-test.pth"
    fixture_tool.save_torch_state_dict(str(pth), sd)
    out = root / "converted"
    byola_weights.convert_checkpoint(str(pth), str(out))
    return pth, sd, out
