"""Converts an official BYOL-A AudioNTT2020 PyTorch checkpoint into adc_jax parameters.

No PyTorch needed: the .pth is read by a restricted unpickler that only rebuilds tensors
(`adc_jax.models.byola_weights.read_torch_state_dict`). Writes

  DIR/params.npz   our parameter paths ('conv1/kernel', ..., 'fc2/bias'), float32
  DIR/meta.json    n_mels, channels, dim, source file and sha256, source keys, param shapes

Usage:
  python tools/convert_byola.py --input AudioNTT2020-BYOLA-64x96d2048.pth --output byola_d2048
  then train with --config.model.byola_init=byola_d2048 --config.model.byola_dim=2048
"""

from __future__ import annotations

import argparse

from adc_jax.models import byola_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="BYOL-A checkpoint (.pth, torch.save zip)")
    parser.add_argument("--output", required=True, help="directory to write params.npz, meta.json")
    parser.add_argument(
        "--prefix",
        default=None,
        help="prefix of the encoder's keys (e.g. 'module.'); found automatically if unique",
    )
    args = parser.parse_args()
    meta = byola_weights.convert_checkpoint(args.input, args.output, prefix=args.prefix)
    print(
        f"Converted {len(meta['params'])} arrays (n_mels={meta['n_mels']}, "
        f"channels={meta['channels']}, dim={meta['dim']}) from {args.input} to {args.output}.\n"
        f"Use: --config.model.byola_init={args.output} --config.model.byola_dim={meta['dim']} "
        f"--config.model.byola_channels={meta['channels']}"
    )


if __name__ == "__main__":
    main()
