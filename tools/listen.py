"""Writes synthetic_adc pairs as WAV files with their captions, to listen to the data.

For each pair: DIR/<key>_1.wav, DIR/<key>_2.wav (16-bit PCM) and DIR/<key>.txt (scene, edits with
their magnitudes, the five reference captions).

  python tools/listen.py --size=quick --split=eval --num=5 --output=/tmp/listen
  python tools/listen.py --size=paper --source=generate --num=3 --output=/tmp/listen

--source=dataset (default) reads the built dataset (building it if needed); --source=generate
synthesises the same pairs directly, which needs no build (the data is a function of the seed).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_synthetic import add_size_flags, resolve  # noqa: E402  (sibling tool)

from adc_jax.data import synthetic  # noqa: E402
from adc_jax.data.features import as_text  # noqa: E402


def _pairs(args: argparse.Namespace):
    """Yields (key, audio1, audio2 int16, scene, edits [(op, cls, magnitude)], captions)."""
    data_dir, spec = resolve(args)
    if args.source == "generate":
        for i in range(args.start, args.start + args.num):
            key, ex = synthetic.example(spec, args.split, i)
            yield (
                key,
                ex["audio1"],
                ex["audio2"],
                ex["scene"],
                list(zip(ex["edit_ops"], ex["edit_classes"], ex["edit_magnitudes"], strict=True)),
                ex["captions"],
            )
        return
    builder = synthetic.build_synthetic(data_dir, spec, num_workers=args.num_workers)
    source = builder.as_data_source(args.split)
    for i in range(args.start, min(len(source), args.start + args.num)):
        ex = source[i]
        edits = list(
            zip(
                map(as_text, ex["edit_ops"]),
                map(as_text, ex["edit_classes"]),
                ex["edit_magnitudes"],
                strict=True,
            )
        )
        yield (
            as_text(ex["key"]),
            ex["audio1"],
            ex["audio2"],
            as_text(ex["scene"]),
            edits,
            [as_text(c) for c in ex["captions"]],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_flags(parser)
    parser.add_argument("--split", default="eval", choices=synthetic.SPLITS)
    parser.add_argument("--num", type=int, default=5, help="number of pairs")
    parser.add_argument("--start", type=int, default=0, help="index of the first pair")
    parser.add_argument("--output", required=True, help="directory for the WAV and text files")
    parser.add_argument("--source", default="dataset", choices=("dataset", "generate"))
    args = parser.parse_args()
    os.makedirs(args.output, exist_ok=True)
    sample_rate = resolve(args)[1].sample_rate
    for key, audio1, audio2, scene, edits, captions in _pairs(args):
        for suffix, audio in (("1", audio1), ("2", audio2)):
            sf.write(
                os.path.join(args.output, f"{key}_{suffix}.wav"),
                np.asarray(audio, np.int16),
                sample_rate,
                subtype="PCM_16",
            )
        units = {"louder": "dB", "quieter": "dB", "earlier": "s", "later": "s"}
        lines = [f"scene: {scene}"]
        lines += [
            f"edit: {op} {cls}" + (f" ({float(m):+.1f} {units[op]})" if op in units else "")
            for op, cls, m in edits
        ]
        lines += [f"caption {j + 1}: {c}" for j, c in enumerate(captions)]
        with open(os.path.join(args.output, f"{key}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"{key}: {'; '.join(captions[:1])}  [{', '.join(f'{o} {c}' for o, c, _ in edits)}]")
    print(f"Wrote to {args.output}")


if __name__ == "__main__":
    main()
