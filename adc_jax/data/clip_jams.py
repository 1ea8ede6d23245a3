"""clip_pairs recipes as JAMS files, one per clip, and the pair rendered back from them.

AudioDiffCaps published, for each pair, the JAMS file Scaper wrote for clip 1 and nothing for
clip 2, so its second clips cannot be rebuilt. Here both clips of a clip_pairs pair are written
as JAMS files (`<key>_1.jams`, `<key>_2.jams`) with the `jams` package, in Scaper's format: one
annotation of the "scaper" namespace (which `jams` ships) whose observations are the background
(role "background") and the events (role "foreground"), with Scaper's fields (label,
source_file, source_time, event_time, event_duration, snr, role, time_stretch, pitch_shift), and
a `sandbox.scaper` holding every setting `scaper.generate_from_jams` reads (duration, fg_path,
bg_path, sr, ref_db, fade lengths, ...).

Scaper's fields are in seconds and decibels, which cannot say exactly what the builder mixed,
so every observation also carries the recipe's own fields, which the schema allows beside
Scaper's: `file` (relative to fg_path / bg_path), `start`, `length` and `onset` in samples,
the linear `gain`, the caption `class` and `order` (the recipe's summing order). Reading a pair
back (`read_pair`) gives exactly the stored recipe, and `render_pair` mixes it with the
builder's own `clip_pairs.mix_recipe`, so the rendered pair equals the stored audio bit for bit.

What the Scaper fields mean here (they are derived, for readers and for Scaper itself):
  * snr: the event's level as the planner set it: the active RMS of its faded segment over the
    RMS of the clip's background, in dB (`clip_pairs.recipe_levels`); Scaper's is LUFS.
  * ref_db: the background's RMS in dBFS (Scaper reads it as LUFS).
  * fix_clipping / peak_normalization: False; the gains already hold the pair's one peak scale.

Scaper does not mix these pairs (docs/data.md says why): it reads the JAMS files, but
generate_from_jams would measure LUFS instead of active RMS, fade with a quarter sine over
`int(fade_in_len * sr)` samples, resample with sox instead of soxr, loop a short background
differently, round seconds to samples with int(), and scale each clip alone if it clips; the
result would be close to, not equal to, the stored audio, and a louder/quieter edit would no
longer be the labelled number of decibels.

Pair-level facts (key, clip number, the other clip's file, captions, edits, the recipe's
version) are in each file's top-level `sandbox.adc_jax`.

Public API:
  pair_jams(recipe, samples, ...) -> (jams.JAMS, jams.JAMS)     the two files of a pair.
  write_pair(folder, key, recipe, samples, ...) -> (path1, path2)
  read_pair(path1, path2) -> recipe dict                          exactly the stored recipe.
  render_pair(path1, path2, clips_dir=None, background_dir=None) -> (audio1, audio2)
  write_split(source, folder, clips_dir, background_dir) -> SplitExport   every pair of a
                                          split, each checked to render from its files.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jams
import numpy as np

from adc_jax.data import clip_pairs
from adc_jax.data.errors import BadData, MissingData
from adc_jax.data.features import as_text, to_int16

NAMESPACE = "scaper"
# Version of the adc_jax fields in the files (the recipe fields beside Scaper's).
JAMS_VERSION = 1
# Scaper's settings that do not vary (one channel, no reverb, no pitch or time changes).
_SCAPER_FIXED = {
    "n_channels": 1,
    "reverb": None,
    "fix_clipping": False,
    "peak_normalization": False,
    "quick_pitch_time": False,
    "allow_repeated_label": True,
    "allow_repeated_source": True,
    "fg_spec": [],
    "bg_spec": [],
}


def _observation(
    item: Mapping[str, Any], role: str, order: int, sr: int, n: int, snr: float, root: str
) -> dict[str, Any]:
    """One observation's (time, duration, value) of a recipe's background or event."""
    start = int(item["start"])
    if role == "background":
        onset, length = 0, n
    else:
        onset, length = int(item["onset"]), int(item["length"])
    value = {
        # Scaper's fields.
        "label": str(item["label"]),
        "source_file": os.path.join(root, item["file"]) if root else str(item["file"]),
        "source_time": start / sr,
        "event_time": onset / sr,
        "event_duration": length / sr,
        "snr": float(snr),
        "role": role,
        "time_stretch": None,
        "pitch_shift": None,
        # The recipe's, exact.
        "file": str(item["file"]),
        "start": start,
        "gain": float(item["gain"]),
        "order": order,
    }
    if role == "foreground":
        value.update({"class": str(item["class"]), "length": length, "onset": onset})
    return {"time": onset / sr, "duration": length / sr, "value": value, "confidence": 1.0}


def pair_jams(
    recipe: str | bytes | Mapping[str, Any],
    samples: clip_pairs.SampleSource,
    *,
    key: str = "",
    clips_dir: str = "",
    background_dir: str = "",
    captions: Sequence[str] = (),
    edits: Sequence[tuple[str, str, float]] = (),
) -> tuple[jams.JAMS, jams.JAMS]:
    """The JAMS files of a pair's two clips.

    Args:
      recipe: a clip_pairs record's `recipe`.
      samples: the recordings (`clip_pairs.recording_samples`), to measure the levels Scaper's
        snr and ref_db fields report.
      key: the pair's key; clips_dir / background_dir: the recordings' folders, written as
        Scaper's fg_path / bg_path (source_file is the file under them; "" leaves both
        relative); captions, edits: the pair's references and (operation, class, magnitude).

    Returns:
      (jam1, jam2), each valid in the `jams` schema.
    """
    recipe = clip_pairs.parse_recipe(recipe)
    sr = int(recipe["sample_rate"])
    n = int(recipe["clip_samples"])
    fade = int(recipe["fade_samples"])
    fg_path = os.path.expanduser(clips_dir) if clips_dir else ""
    bg_path = os.path.expanduser(background_dir) if background_dir else fg_path
    levels = clip_pairs.recipe_levels(recipe, samples)
    out = []
    for c, (clip, (ref_db, snrs)) in enumerate(zip(recipe["clips"], levels, strict=True), 1):
        data = [_observation(clip["background"], "background", 0, sr, n, 0.0, bg_path)]
        data += [
            _observation(ev, "foreground", i + 1, sr, n, snr, fg_path)
            for i, (ev, snr) in enumerate(zip(clip["events"], snrs, strict=True))
        ]
        scaper = {
            **_SCAPER_FIXED,
            "duration": n / sr,
            "original_duration": n / sr,
            "fg_path": fg_path,
            "bg_path": bg_path,
            "fg_labels": sorted({ev["label"] for ev in clip["events"]}),
            "bg_labels": [clip["background"]["label"]],
            "protected_labels": [],
            "sr": sr,
            "ref_db": float(ref_db),
            "fade_in_len": fade / sr,
            "fade_out_len": fade / sr,
            "n_events": len(clip["events"]),
        }
        annotation = jams.Annotation(
            namespace=NAMESPACE,
            time=0.0,
            duration=n / sr,
            data=data,
            sandbox={"scaper": scaper},
        )
        annotation.annotation_metadata.data_source = "adc_jax clip_pairs"
        jam = jams.JAMS(annotations=[annotation])
        jam.file_metadata.duration = n / sr
        jam.sandbox.adc_jax = {
            "jams_version": JAMS_VERSION,
            "recipe_version": int(recipe["version"]),
            "pair": key,
            "clip": c,
            "other_clip": f"{key}_{3 - c}.jams" if key else "",
            "sample_rate": sr,
            "clip_samples": n,
            "fade_samples": fade,
            "captions": [str(x) for x in captions],
            "edits": [[str(op), str(cls), float(m)] for op, cls, m in edits],
        }
        out.append(jam)
    return out[0], out[1]


def write_pair(
    folder: str, key: str, recipe: str | bytes | Mapping[str, Any], samples, **kwargs: Any
) -> tuple[str, str]:
    """Writes `pair_jams(recipe, samples, key=key, **kwargs)` as folder/<key>_{1,2}.jams.

    Returns:
      The two paths.
    """
    os.makedirs(folder, exist_ok=True)
    paths = []
    for c, jam in enumerate(pair_jams(recipe, samples, key=key, **kwargs), 1):
        path = os.path.join(folder, f"{key}_{c}.jams")
        jam.save(path)
        paths.append(path)
    return paths[0], paths[1]


def _load(path: str) -> tuple[jams.JAMS, jams.Annotation, Mapping[str, Any]]:
    try:
        jam = jams.load(path)
    except FileNotFoundError:
        raise MissingData(f"JAMS file {path} does not exist.") from None
    except (ValueError, jams.JamsError) as e:  # bad JSON, or a file outside the schema
        raise BadData(f"JAMS file {path} is not a valid JAMS file: {e}") from None
    found = jam.search(namespace=NAMESPACE)
    meta = getattr(jam.sandbox, "adc_jax", None)
    if not found or not isinstance(meta, Mapping) or "clip_samples" not in meta:
        raise BadData(
            f"JAMS file {path} was not written by adc_jax's clip_pairs (it has no "
            f"{NAMESPACE!r} annotation with the exact recipe fields); a Scaper JAMS file "
            "alone does not hold what rendering a pair exactly needs."
        )
    if int(meta.get("jams_version", 0)) > JAMS_VERSION:
        raise BadData(
            f"JAMS file {path} has version {meta['jams_version']}, newer than this adc_jax "
            f"reads ({JAMS_VERSION}); update adc_jax."
        )
    return jam, found[0], meta


def _clip(annotation: jams.Annotation, path: str) -> dict[str, Any]:
    """The recipe's clip of one annotation: its background and its events in summing order."""
    values = sorted((obs.value for obs in annotation.data), key=lambda v: v["order"])
    if not values or values[0]["role"] != "background":
        raise BadData(f"JAMS file {path} has no background observation.")
    bg = values[0]
    clip = {
        "background": {
            "file": bg["file"],
            "label": bg["label"],
            "start": int(bg["start"]),
            "gain": bg["gain"],
        },
        "events": [
            {
                "class": v["class"],
                "label": v["label"],
                "file": v["file"],
                "start": int(v["start"]),
                "length": int(v["length"]),
                "onset": int(v["onset"]),
                "gain": v["gain"],
            }
            for v in values[1:]
        ],
    }
    return clip


def read_pair(path1: str, path2: str) -> dict[str, Any]:
    """The recipe of a pair from its two JAMS files: equal to the record's stored recipe.

    Raises:
      MissingData: a file is missing.
      BadData: a file is not JAMS, not written by clip_pairs, or the two files are
        not the two clips of one pair.
    """
    (_, ann1, meta1), (_, ann2, meta2) = _load(path1), _load(path2)
    shared = ("pair", "recipe_version", "sample_rate", "clip_samples", "fade_samples")
    if (meta1["clip"], meta2["clip"]) != (1, 2) or any(meta1[k] != meta2[k] for k in shared):
        raise BadData(
            f"{path1} and {path2} are not clips 1 and 2 of one pair (they are clip "
            f"{meta1['clip']} of {meta1['pair']!r} and clip {meta2['clip']} of "
            f"{meta2['pair']!r})."
        )
    return {
        "version": int(meta1["recipe_version"]),
        "sample_rate": int(meta1["sample_rate"]),
        "clip_samples": int(meta1["clip_samples"]),
        "fade_samples": int(meta1["fade_samples"]),
        "clips": [_clip(ann1, path1), _clip(ann2, path2)],
    }


def render_pair(
    path1: str, path2: str, clips_dir: str | None = None, background_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Renders a pair from its two JAMS files exactly as the build mixed it.

    Args:
      path1, path2: the pair's `<key>_1.jams` and `<key>_2.jams`.
      clips_dir, background_dir: where the recordings are now; None takes the files' fg_path /
        bg_path (as Scaper's generate_from_jams does).

    Returns:
      (audio1, audio2): [N] float32; `features.to_int16` of them equals the stored audio.
    """
    recipe = read_pair(path1, path2)
    if clips_dir is None or background_dir is None:
        scaper = jams.load(path1).search(namespace=NAMESPACE)[0].sandbox.scaper
        clips_dir = scaper["fg_path"] if clips_dir is None else clips_dir
        background_dir = scaper["bg_path"] if background_dir is None else background_dir
    if not clips_dir:
        raise BadData(
            f"{path1} names its recordings relative to a folder it does not give: pass "
            "clips_dir (and background_dir) to render_pair."
        )
    return clip_pairs.render_recipe(recipe, clips_dir, background_dir)


@dataclasses.dataclass(frozen=True)
class SplitExport:
    """What `write_split` wrote: pairs, files, the largest render difference (int16 steps) and
    the seconds it took."""

    pairs: int
    files: int
    worst: int
    seconds: float


def write_split(
    source: Sequence[Mapping[str, Any]],
    folder: str,
    clips_dir: str,
    background_dir: str = "",
    *,
    check: bool = True,
    cache_size: int = 256,
) -> SplitExport:
    """Writes both JAMS files of every pair of a clip_pairs split to folder/<key>_{1,2}.jams.

    Args:
      source: the split's records (`builder.as_data_source(split)`).
      folder: where the files go (created).
      clips_dir, background_dir: the build's recordings (written as fg_path / bg_path).
      check: render each pair back from its two files and require the stored audio exactly.
      cache_size: decoded recordings kept in memory (each is decoded once while it stays).

    Raises:
      BadData: a pair does not render back to its stored audio (its recordings changed since
        the build).
    """
    start = time.perf_counter()
    sample_rate = None
    samples = None
    worst = 0
    for i in range(len(source)):
        ex = source[i]
        recipe = clip_pairs.parse_recipe(ex["recipe"])
        if samples is None or int(recipe["sample_rate"]) != sample_rate:
            sample_rate = int(recipe["sample_rate"])
            samples = clip_pairs.recording_samples(
                clips_dir, background_dir, sample_rate, cache_size
            )
        key = as_text(ex["key"])
        edits = zip(ex["edit_ops"], ex["edit_classes"], ex["edit_magnitudes"], strict=True)
        paths = write_pair(
            folder,
            key,
            recipe,
            samples,
            clips_dir=clips_dir,
            background_dir=background_dir,
            captions=[as_text(c) for c in ex["captions"]],
            edits=[(as_text(op), as_text(cls), float(m)) for op, cls, m in edits],
        )
        if check:
            rendered = clip_pairs.mix_recipe(read_pair(*paths), samples)
            for audio, stored in zip(rendered, (ex["audio1"], ex["audio2"]), strict=True):
                diff = np.abs(to_int16(audio).astype(np.int32) - np.asarray(stored, np.int32))
                worst = max(worst, int(diff.max()))
            if worst:
                raise BadData(
                    f"{key}: rendering {paths[0]} and {paths[1]} differs from the stored audio "
                    f"by {worst} int16 steps: the recordings in {clips_dir!r} / "
                    f"{background_dir!r} changed since the build; rebuild the dataset."
                )
    return SplitExport(len(source), 2 * len(source), worst, time.perf_counter() - start)
