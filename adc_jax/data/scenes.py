"""Planning and mixing one synthetic_adc pair: a scene, its edits, two waveforms and captions.

Modelled on how AudioDiffCaps was made (Takeuchi et al., DCASE 2023) with Scaper: a scene is a
background (rain or road traffic) plus 0-2 foreground events; clip 2 is clip 1 after one edit, or
two edits in about a third of the pairs. The sounds come from `adc_jax.data.sounds`, the captions
from the grammar of `adc_jax.data.captions`; the pair is a function of its generator's state only.

Time scales with the clip: at 10 s events last 3-5 s and start in the first 8 s as in
AudioDiffCaps; at 4 s (the quick config) they last 1.2-2 s. Levels are stated relative to the
background RMS (event level = RMS over the event's active frames, `sounds.active_rms`; thunder
gets CLASS_OFFSET_DB on top), 0-15 dB for events that are not edited, so events are not buried
(Scaper's -16...+18 dB would hide many of these sounds); loudness edits change the level by
6-12 dB, keeping both levels in -3...+18 dB, and moves shift an event by at least a quarter of
the clip.

Edits (operation, class), with the magnitude stored per edit (clip 2 minus clip 1):
  add / remove     the event exists only in clip 2 / only in clip 1          (magnitude 0)
  louder / quieter the same event, 6-12 dB louder / quieter                    (+dB / -dB)
  change           a different instance of the class (pitch, rhythm, timbre) (magnitude 0)
  earlier / later  the same event, moved by >= clip/4                        (-s / +s)
No scene holds two events of a class and no event is edited twice, so every pair has exactly one
description up to wording. Both clips share the background instance and every untouched event.

Public API:
  generate_pair(rng, clip_seconds, ...)   one pair as float waveforms, captions and edits.
  Event                                   a foreground event placed in a clip.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from adc_jax.data import features as features_lib
from adc_jax.data.captions import BACKGROUNDS, EVENT_CLASSES, OPERATIONS, make_captions
from adc_jax.data.sounds import synthesize_background, synthesize_event

# Background RMS level in dBFS (centre and +/- spread).
BACKGROUND_DBFS = -30.0
BACKGROUND_DBFS_SPREAD = 3.0
# Level of an event that is not loudness-edited, in dB above the background RMS.
EVENT_DB = (0.0, 15.0)
# Both levels of a louder/quieter event lie in this range (dB above the background).
LOUDNESS_EDIT_RANGE_DB = (-3.0, 18.0)
# Size of a louder/quieter edit in dB.
LOUDNESS_STEP_DB = (6.0, 12.0)
# Event duration as a fraction of the clip (3-5 s of a 10 s clip, as in AudioDiffCaps).
EVENT_FRACTION = (0.3, 0.5)
# Latest onset: at least this fraction of an event lies inside the clip (and onset <= 0.8 clip).
MIN_INSIDE_FRACTION = 0.6
# A moved event shifts by at least this fraction of the clip.
MIN_SHIFT_FRACTION = 0.25
# Probability that a pair has two edits (AudioDiffCaps: about a third).
TWO_EDIT_PROBABILITY = 1.0 / 3.0
# Scenes hold at most this many events in clip 1 (AudioDiffCaps: 0-2) and in clip 2.
MAX_EVENTS_CLIP1 = 2
MAX_EVENTS_CLIP2 = 3
# A "change" draws an instance whose character (pitch/rate, in [0, 1]) differs by at least this.
MIN_CHARACTER_CHANGE = 0.35
# Extra gain (dB) of classes whose energy sits where the backgrounds are loudest (thunder's
# rumble is under 400 Hz), so that every class is about equally audible at the same level_db.
CLASS_OFFSET_DB = {"thunder": 4.0}
# Peak level of the louder of the two clips after the shared gain (no clipping).
PEAK = 0.9
# Reference captions per pair.
NUM_CAPTIONS = 5

_F32 = np.float32


# ------------------------------------------------------------------------------ scenes and edits


@dataclasses.dataclass(frozen=True)
class Event:
    """A foreground event placed in a clip.

    cls: event class; seed/character: which instance; onset/duration: seconds;
    level_db: active RMS in dB above the background RMS.
    """

    cls: str
    seed: int
    character: float
    onset: float
    duration: float
    level_db: float


def _new_event(
    rng: np.random.Generator,
    cls: str,
    clip_seconds: float,
    onset_range: tuple[float, float] | None = None,
    level_db: float | None = None,
    duration: float | None = None,
) -> Event:
    if duration is None:
        duration = float(rng.uniform(*EVENT_FRACTION) * clip_seconds)
    lo, hi = onset_range if onset_range is not None else (0.0, _max_onset(duration, clip_seconds))
    return Event(
        cls=cls,
        seed=int(rng.integers(2**62)),
        character=float(rng.random()),
        onset=float(rng.uniform(lo, hi)),
        duration=duration,
        level_db=float(rng.uniform(*EVENT_DB)) if level_db is None else level_db,
    )


def _max_onset(duration: float, clip_seconds: float) -> float:
    return max(0.0, min(0.8 * clip_seconds, clip_seconds - MIN_INSIDE_FRACTION * duration))


def _plan(
    rng: np.random.Generator, clip_seconds: float, num_edits: int | None
) -> tuple[list[Event], list[Event], list[tuple[str, str, float]]]:
    """Draws clip 1's events, the edits, and clip 2's events.

    Returns (events1, events2, edits) with edits as (operation, class, magnitude).
    """
    if num_edits is None:
        num_edits = 2 if rng.random() < TWO_EDIT_PROBABILITY else 1
    if num_edits not in (1, 2):
        raise ValueError(f"num_edits must be 1, 2 or None, not {num_edits!r}.")
    ops = [OPERATIONS[i] for i in rng.integers(len(OPERATIONS), size=num_edits)]
    n_add = ops.count("add")
    n_mod = num_edits - n_add
    max_extra = min(MAX_EVENTS_CLIP1 - n_mod, MAX_EVENTS_CLIP2 - n_mod - n_add)
    n_extra = int(rng.integers(0, max_extra + 1))
    classes = [
        EVENT_CLASSES[i] for i in rng.choice(len(EVENT_CLASSES), num_edits + n_extra, replace=False)
    ]
    T = clip_seconds
    min_shift = MIN_SHIFT_FRACTION * T
    events1: list[Event] = []
    events2: list[Event] = []
    edits: list[tuple[str, str, float]] = []
    for op, cls in zip(ops, classes[:num_edits], strict=True):
        magnitude = 0.0
        if op == "add":
            events2.append(_new_event(rng, cls, T))
        elif op == "remove":
            events1.append(_new_event(rng, cls, T))
        elif op in ("louder", "quieter"):
            step = float(rng.uniform(*LOUDNESS_STEP_DB))
            lo_db = float(rng.uniform(LOUDNESS_EDIT_RANGE_DB[0], LOUDNESS_EDIT_RANGE_DB[1] - step))
            first, second = (lo_db, lo_db + step) if op == "louder" else (lo_db + step, lo_db)
            e1 = _new_event(rng, cls, T, level_db=first)
            events1.append(e1)
            events2.append(dataclasses.replace(e1, level_db=second))
            magnitude = second - first
        elif op == "change":
            e1 = _new_event(rng, cls, T)
            character = e1.character
            while abs(character - e1.character) < MIN_CHARACTER_CHANGE:
                character = float(rng.random())
            events1.append(e1)
            events2.append(
                dataclasses.replace(e1, seed=int(rng.integers(2**62)), character=character)
            )
        else:  # earlier / later: the later position is at least min_shift after the earlier one
            duration = float(rng.uniform(*EVENT_FRACTION) * T)
            latest = _max_onset(duration, T)  # >= 0.7 T > min_shift for any clip length
            early = float(rng.uniform(0.0, latest - min_shift))
            late = float(rng.uniform(early + min_shift, latest))
            first, second = (late, early) if op == "earlier" else (early, late)
            e1 = _new_event(rng, cls, T, onset_range=(first, first), duration=duration)
            events1.append(e1)
            events2.append(dataclasses.replace(e1, onset=second))
            magnitude = second - first
        edits.append((op, cls, magnitude))
    for cls in classes[num_edits:]:
        e = _new_event(rng, cls, T)
        events1.append(e)
        events2.append(e)
    return events1, events2, edits


def _place(out: np.ndarray, wav: np.ndarray, onset: float, gain: float, sr: int) -> np.ndarray:
    """Adds gain*wav into out starting at onset seconds (cropped at the end); returns the stem."""
    stem = np.zeros_like(out)
    a = int(round(onset * sr))
    m = min(wav.shape[0], out.shape[0] - a)
    if m > 0:
        stem[a : a + m] = gain * wav[:m]
        out += stem
    return stem


def generate_pair(
    rng: np.random.Generator,
    clip_seconds: float,
    sample_rate: int = features_lib.SAMPLE_RATE,
    num_edits: int | None = None,
    *,
    return_stems: bool = False,
) -> dict[str, Any]:
    """Synthesises one difference pair.

    Args:
      rng: the pair's generator (the result is a function of its state only).
      clip_seconds: length of both clips.
      sample_rate: Hz.
      num_edits: 1 or 2 edits; None draws 2 with probability TWO_EDIT_PROBABILITY.
      return_stems: also return the scaled background and per-event signals of both clips.

    Returns:
      dict with audio1, audio2 ([N] float32 in [-1, 1]), captions (5 distinct str), scene,
      edits ([(op, class)]), edit_ops, edit_classes, edit_magnitudes (list of float: dB for
      louder/quieter, seconds for earlier/later, 0 otherwise; clip 2 minus clip 1), events1,
      events2 (lists of `Event`) and, with return_stems, background ([N]) and stems1/stems2
      ({class: [N]}), which sum to audio1/audio2.
    """
    sr = sample_rate
    scene = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    bg_gain = 10.0 ** ((BACKGROUND_DBFS + rng.uniform(-1, 1) * BACKGROUND_DBFS_SPREAD) / 20.0)
    background = bg_gain * synthesize_background(scene, int(rng.integers(2**62)), clip_seconds, sr)
    events1, events2, edits = _plan(rng, clip_seconds, num_edits)
    captions = make_captions([(op, cls) for op, cls, _ in edits], rng, NUM_CAPTIONS)

    cache: dict[tuple, np.ndarray] = {}
    clips, stems = [], []
    for events in (events1, events2):
        clip = background.copy()
        clip_stems = {}
        for e in events:
            key = (e.cls, e.seed, e.character, e.duration)
            if key not in cache:
                cache[key] = synthesize_event(e.cls, e.seed, e.character, e.duration, sr)
            gain = bg_gain * 10.0 ** ((e.level_db + CLASS_OFFSET_DB.get(e.cls, 0.0)) / 20.0)
            clip_stems[e.cls] = _place(clip, cache[key], e.onset, gain, sr)
        clips.append(clip)
        stems.append(clip_stems)
    peak = max(float(np.abs(c).max()) for c in clips)
    scale = min(1.0, PEAK / max(peak, 1e-9))
    out = {
        "audio1": (clips[0] * scale).astype(_F32),
        "audio2": (clips[1] * scale).astype(_F32),
        "captions": captions,
        "scene": scene,
        "edits": [(op, cls) for op, cls, _ in edits],
        "edit_ops": [op for op, _, _ in edits],
        "edit_classes": [cls for _, cls, _ in edits],
        "edit_magnitudes": [float(m) for _, _, m in edits],
        "events1": events1,
        "events2": events2,
    }
    if return_stems:
        out["background"] = (background * scale).astype(_F32)
        out["stems1"] = {k: (v * scale).astype(_F32) for k, v in stems[0].items()}
        out["stems2"] = {k: (v * scale).astype(_F32) for k, v in stems[1].items()}
    return out
