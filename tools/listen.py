"""Writes synthetic_adc or clip_pairs pairs as WAV files with their captions, to listen to the data.

For each pair: DIR/<key>_1.wav, DIR/<key>_2.wav (16-bit PCM) and DIR/<key>.txt (scene, edits with
their magnitudes, the five reference captions and, for clip_pairs, the recordings it was mixed
from); for clip_pairs also DIR/<key>_1.jams and DIR/<key>_2.jams, each clip's mixture in Scaper's
JAMS format (`adc_jax.data.clip_jams`; tools/export_jams.py writes them for whole splits).

  python tools/listen.py --size=quick --split=eval --num=5 --output=/tmp/listen
  python tools/listen.py --size=paper --source=generate --num=3 --output=/tmp/listen
  python tools/listen.py --data=clip_pairs --clips_dir=ESC-50 --background_dir=FSD50K \
      --size=quick --num=5 --output=/tmp/listen

--source=dataset (default) reads the built dataset (building it if needed); --source=generate
synthesises the same pairs directly, which needs no build (synthetic_adc only: the data is a
function of the seed). With --data=clip_pairs each pair is also re-rendered from its two JAMS
files and the recordings, and must equal the stored audio within int16 rounding (the tool stops
if not).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_synthetic import IO_HINT, add_size_flags, resolve  # noqa: E402  (sibling tool)

from adc_jax import config as config_lib  # noqa: E402
from adc_jax.data import clip_jams, clip_pairs  # noqa: E402
from adc_jax.data.errors import BadData, run_data_tool  # noqa: E402
from adc_jax.data.features import as_text, to_int16  # noqa: E402
from adc_jax.data.synthetic import builder as synthetic  # noqa: E402

# Largest difference, in int16 steps, allowed between a re-rendered recipe and the stored audio.
MAX_RENDER_ERROR = 1


def add_clip_pairs_flags(parser: argparse.ArgumentParser) -> None:
    """The flags naming a clip_pairs build (shared with tools/export_jams.py)."""
    parser.add_argument("--clips_dir", default="", help="clip_pairs: foreground recordings")
    parser.add_argument(
        "--background_dir", default="", help="clip_pairs: background recordings (default: clips)"
    )
    parser.add_argument(
        "--clip_classes", default="", help="clip_pairs: comma-separated foreground labels"
    )
    parser.add_argument(
        "--background_classes", default="", help="clip_pairs: comma-separated background labels"
    )


def clip_pairs_spec(args: argparse.Namespace) -> clip_pairs.ClipPairsSpec:
    """The clip_pairs spec of the flags: the size preset's data fields, overridden by flags.

    A missing --clips_dir or a flag out of range exits with status 2 and the usage line.
    """
    if getattr(args, "source", "dataset") == "generate":
        args.parser.error("--source=generate is for synthetic_adc; clip_pairs reads its build.")
    if not args.clips_dir:
        args.parser.error("clip_pairs needs --clips_dir (ESC-50, FSD50K or class folders).")
    d = config_lib.base_config(args.size).data
    for name in ("clips_dir", "background_dir", "clip_classes", "background_classes"):
        d[name] = getattr(args, name)
    try:
        spec = clip_pairs.ClipPairsSpec.from_config(d)
    except ValueError as e:
        args.parser.error(str(e))
    sizes = resolve(args)[1]  # the preset with the size flags applied
    return dataclasses.replace(
        spec,
        **{k: getattr(sizes, k) for k in ("num_train", "num_validation", "num_eval")},
        clip_seconds=sizes.clip_seconds,
        seed=sizes.seed,
    )


def _record_fields(ex) -> tuple:
    edits = list(
        zip(
            map(as_text, ex["edit_ops"]),
            map(as_text, ex["edit_classes"]),
            ex["edit_magnitudes"],
            strict=True,
        )
    )
    return (
        as_text(ex["key"]),
        ex["audio1"],
        ex["audio2"],
        as_text(ex["scene"]),
        edits,
        [as_text(c) for c in ex["captions"]],
    )


def _clip_pairs(args: argparse.Namespace):
    """Yields the fields of `_pairs` plus recipe lines, after checking each recipe re-renders."""
    spec = clip_pairs_spec(args)
    data_dir = resolve(args)[0]
    builder = clip_pairs.build_clip_pairs(data_dir, spec, num_workers=args.num_workers)
    source = builder.as_data_source(args.split)
    samples = clip_pairs.recording_samples(
        spec.clips_dir, spec.background_dir, spec.sample_rate, cache_size=64
    )
    for i in range(args.start, min(len(source), args.start + args.num)):
        ex = source[i]
        fields = _record_fields(ex)
        paths = clip_jams.write_pair(
            args.output,
            fields[0],
            ex["recipe"],
            samples,
            clips_dir=spec.clips_dir,
            background_dir=spec.background_dir,
            captions=fields[5],
            edits=fields[4],
        )
        rendered = clip_jams.render_pair(*paths)
        worst = max(
            int(np.abs(to_int16(r).astype(np.int32) - np.asarray(s, np.int32)).max())
            for r, s in zip(rendered, (ex["audio1"], ex["audio2"]), strict=True)
        )
        if worst > MAX_RENDER_ERROR:
            raise BadData(
                f"{fields[0]}: re-rendering its JAMS files differs from the stored audio by {worst} "
                f"int16 steps: the recordings changed since the build in {builder.data_dir}; "
                "delete that folder to rebuild it."
            )
        recipe = json.loads(as_text(ex["recipe"]))
        lines = [
            f"render check: {fields[0]}_1.jams and _2.jams re-render within {worst} int16 step(s)"
        ]
        sr = recipe["sample_rate"]
        for c, clip in enumerate(recipe["clips"], 1):
            bg = clip["background"]
            lines.append(f"clip {c} background: {bg['file']} from {bg['start'] / sr:.2f} s")
            lines += [
                f"clip {c} event: {ev['class']} from {ev['file']} "
                f"[{ev['start'] / sr:.2f} s + {ev['length'] / sr:.2f} s] at {ev['onset'] / sr:.2f} s"
                for ev in clip["events"]
            ]
        yield (*fields, lines)


def _pairs(args: argparse.Namespace):
    """Yields (key, audio1, audio2 int16, scene, edits [(op, cls, magnitude)], captions, extra
    text lines)."""
    if args.data == "clip_pairs":
        yield from _clip_pairs(args)
        return
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
                [],
            )
        return
    builder = synthetic.build_synthetic(data_dir, spec, num_workers=args.num_workers)
    source = builder.as_data_source(args.split)
    for i in range(args.start, min(len(source), args.start + args.num)):
        yield (*_record_fields(source[i]), [])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_flags(parser)
    parser.add_argument("--split", default="eval", choices=synthetic.SPLITS)
    parser.add_argument("--num", type=int, default=5, help="number of pairs")
    parser.add_argument("--start", type=int, default=0, help="index of the first pair")
    parser.add_argument("--output", required=True, help="directory for the WAV and text files")
    parser.add_argument("--source", default="dataset", choices=("dataset", "generate"))
    parser.add_argument("--data", default="synthetic_adc", choices=("synthetic_adc", "clip_pairs"))
    add_clip_pairs_flags(parser)
    args = parser.parse_args(argv)
    run_data_tool(lambda: _write(args), IO_HINT + " Check that --output is writable.")


def _write(args: argparse.Namespace) -> None:
    """Writes the pairs of the parsed flags to args.output."""
    os.makedirs(args.output, exist_ok=True)
    sample_rate = resolve(args)[1].sample_rate
    for key, audio1, audio2, scene, edits, captions, extra in _pairs(args):
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
        lines += extra
        with open(os.path.join(args.output, f"{key}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"{key}: {'; '.join(captions[:1])}  [{', '.join(f'{o} {c}' for o, c, _ in edits)}]")
    print(f"Wrote to {args.output}")


if __name__ == "__main__":
    main()
