"""Planning and mixing one difference pair: a scene, its edits, two waveforms and captions.

Modelled on how AudioDiffCaps was made (Takeuchi et al., DCASE 2023) with Scaper: a scene is a
background (rain or road traffic) plus 0-2 foreground events; clip 2 is clip 1 after one edit, or
two edits in about a third of the pairs. For synthetic_adc the sounds come from `sounds` (in
this subpackage); the clip_pairs dataset plans the same way over real recordings
(`RecordedSources`: an event is a segment of a recording, "change" takes another recording of the
class) and mixes them itself. The captions come from the grammar of `grammar`; the pair is a
function of its generator's state (and the sources) only.

Time scales with the clip: at 10 s events last 3-5 s and start in the first 8 s as in
AudioDiffCaps; at 4 s (the quick config) they last 1.2-2 s. Levels are stated relative to the
background RMS (event level = RMS over the event's active frames, `sounds.active_rms`; thunder
gets CLASS_OFFSET_DB on top), 0-15 dB for events that are not edited, so events are not buried
(Scaper's -16...+18 dB would hide many of these sounds); loudness edits change the level by
6-12 dB, keeping both levels in -3...+18 dB, and moves shift an event by at least a quarter of
the clip.

A share of the pairs (`no_change_fraction`, 0 by default) has no edit: clip 2 re-renders clip 1's
scene (0-2 events, the same instances and background) with every event's level and onset
jittered by less than a tenth of the smallest edit of its kind (NO_CHANGE_*), so that "no
difference" means no audible edit rather than identical samples; its references are the
grammar's "no difference" phrases and its edit set is empty.

Edits (operation, class), with the magnitude stored per edit (clip 2 minus clip 1):
  add / remove     the event exists only in clip 2 / only in clip 1          (magnitude 0)
  louder / quieter the same event, 6-12 dB louder / quieter                    (+dB / -dB)
  change           a different instance of the class (pitch, rhythm, timbre) (magnitude 0)
  earlier / later  the same event, moved by >= clip/4                        (-s / +s)
No scene holds two events of a class and no event is edited twice, so every pair has exactly one
description up to wording. Both clips share the background instance and every untouched event.

Public API:
  generate_pair(rng, clip_seconds, ...)   one synthetic pair as float waveforms, captions and edits.
  plan_pair(rng, clip_seconds, sources)   the plan of a pair (scene, levels, events, edits,
                                          captions) without audio.
  Event, PairPlan                         a foreground event placed in a clip; a planned pair.
  SYNTHESISED, RecordedSources            where instances come from: the synthesiser, or
                                          recordings known by their lengths.
  single_event_clip(rng, event, ...)      one event crop over a background at a drawn
                                          signal-to-background ratio (no pair, no caption): the
                                          linear probe's labelled clips and the synthetic_events
                                          pretraining clips.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from adc_jax.data import features as features_lib
from adc_jax.data.synthetic.grammar import BACKGROUNDS, EVENT_CLASSES, OPERATIONS, make_captions
from adc_jax.data.synthetic.sounds import active_rms, synthesize_background, synthesize_event

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
# A pair without a difference re-renders clip 1's events in clip 2 with each event's level moved
# by up to this many dB (a loudness edit is >= LOUDNESS_STEP_DB[0] = 6 dB) ...
NO_CHANGE_LEVEL_JITTER_DB = 1.5
# ... and its onset by up to this fraction of the clip (a move is >= MIN_SHIFT_FRACTION = 1/4).
NO_CHANGE_ONSET_JITTER_FRACTION = 0.04

_F32 = np.float32


# ------------------------------------------------------------------------------ scenes and edits


@dataclasses.dataclass(frozen=True)
class Event:
    """A foreground event placed in a clip.

    cls: event class; seed/character: which synthesised instance; onset/duration: seconds;
    level_db: active RMS in dB above the background RMS; source/start (recorded sources only):
    the recording's index in its class's pool and the sample where the segment starts in it
    (-1 and 0 for synthesised events).
    """

    cls: str
    seed: int
    character: float
    onset: float
    duration: float
    level_db: float
    source: int = -1
    start: int = 0


class SynthesisedSources:
    """Instances from `adc_jax.data.synthetic.sounds`: an event is a (seed, character), a
    background a seed."""

    classes = EVENT_CLASSES
    scenes = BACKGROUNDS

    def new_instance(
        self, rng: np.random.Generator, cls: str, duration: float
    ) -> tuple[dict[str, Any], float]:
        """(Event fields of a new instance of cls, its duration)."""
        del cls
        return {"seed": int(rng.integers(2**62)), "character": float(rng.random())}, duration

    def other_instance(
        self, rng: np.random.Generator, event: Event
    ) -> tuple[dict[str, Any], float]:
        """A different instance of the event's class, far in character, and its duration."""
        character = event.character
        while abs(character - event.character) < MIN_CHARACTER_CHANGE:
            character = float(rng.random())
        return {"seed": int(rng.integers(2**62)), "character": character}, event.duration

    def background(
        self, rng: np.random.Generator, scene: str, clip_seconds: float
    ) -> dict[str, int]:
        """The instance of a background: {"seed"}."""
        del scene, clip_seconds
        return {"seed": int(rng.integers(2**62))}


SYNTHESISED = SynthesisedSources()


@dataclasses.dataclass(frozen=True)
class RecordedSources:
    """Real recordings to cut events and backgrounds from, known by their lengths (clip_pairs).

    An event is a segment of a recording's active part: as long as the planned duration or the
    whole active part if that is shorter, at a random place in it; "change" takes another
    recording of the class (the event keeps its onset, level and the shorter of the two
    durations). A background is a clip-long stretch of a recording, looped if it is shorter.
    CLASS_OFFSET_DB is not applied to recordings (it was tuned on the synthesised sounds).

    Attributes:
      events: class -> one (start, length) per recording: its active part in samples.
      backgrounds: scene -> one length in samples per recording.
      sample_rate: Hz of those samples.
    """

    events: Mapping[str, tuple[tuple[int, int], ...]]
    backgrounds: Mapping[str, tuple[int, ...]]
    sample_rate: int

    def __post_init__(self) -> None:
        for cls, pool in self.events.items():
            if len(pool) < 2 or min(length for _, length in pool) < 1:
                raise ValueError(
                    f"Event class {cls!r} needs two or more non-empty recordings ('change' swaps "
                    f"one for another), not {len(pool)}."
                )
        for scene, pool in self.backgrounds.items():
            if not pool or min(pool) < 1:
                raise ValueError(f"Background {scene!r} needs a non-empty recording.")
        if len(self.events) < 2 or not self.backgrounds:
            raise ValueError(
                f"Pairs need two or more event classes and a background, not {len(self.events)} "
                f"and {len(self.backgrounds)}."
            )

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.events)

    @property
    def scenes(self) -> tuple[str, ...]:
        return tuple(self.backgrounds)

    def _segment(
        self, rng: np.random.Generator, cls: str, source: int, duration: float
    ) -> tuple[dict[str, Any], float]:
        start, length = self.events[cls][source]
        n = min(max(1, int(round(duration * self.sample_rate))), length)
        offset = start + int(rng.integers(length - n + 1))
        return {"source": source, "start": offset}, n / self.sample_rate

    def new_instance(
        self, rng: np.random.Generator, cls: str, duration: float
    ) -> tuple[dict[str, Any], float]:
        """(Event fields of a random segment of a random recording of cls, its duration)."""
        return self._segment(rng, cls, int(rng.integers(len(self.events[cls]))), duration)

    def other_instance(
        self, rng: np.random.Generator, event: Event
    ) -> tuple[dict[str, Any], float]:
        """A segment of another recording of the class, at most as long as the event."""
        source = int(rng.integers(len(self.events[event.cls]) - 1))
        source += source >= event.source
        return self._segment(rng, event.cls, source, event.duration)

    def background(
        self, rng: np.random.Generator, scene: str, clip_seconds: float
    ) -> dict[str, int]:
        """{"source", "start"}: a recording of the scene and the sample where the clip starts."""
        pool = self.backgrounds[scene]
        source = int(rng.integers(len(pool)))
        n = int(round(clip_seconds * self.sample_rate))
        span = pool[source] - n + 1 if pool[source] >= n else pool[source]
        return {"source": source, "start": int(rng.integers(span))}


@dataclasses.dataclass(frozen=True)
class PairPlan:
    """A planned pair: everything but the audio.

    scene: the background scene; background: its instance (`sources.background`);
    background_gain: its RMS (linear, full scale 1); events1/events2: the events of each clip;
    edits: (operation, class, magnitude) per edit; captions: the reference captions.
    """

    scene: str
    background: dict[str, int]
    background_gain: float
    events1: list[Event]
    events2: list[Event]
    edits: list[tuple[str, str, float]]
    captions: list[str]


def _new_event(
    rng: np.random.Generator,
    sources: SynthesisedSources | RecordedSources,
    cls: str,
    clip_seconds: float,
    onset_range: tuple[float, float] | None = None,
    level_db: float | None = None,
    duration: float | None = None,
) -> Event:
    if duration is None:
        duration = float(rng.uniform(*EVENT_FRACTION) * clip_seconds)
    instance, duration = sources.new_instance(rng, cls, duration)
    lo, hi = onset_range if onset_range is not None else (0.0, _max_onset(duration, clip_seconds))
    return Event(
        cls=cls,
        seed=instance.get("seed", 0),
        character=instance.get("character", 0.0),
        onset=float(rng.uniform(lo, hi)),
        duration=duration,
        level_db=float(rng.uniform(*EVENT_DB)) if level_db is None else level_db,
        source=instance.get("source", -1),
        start=instance.get("start", 0),
    )


def _max_onset(duration: float, clip_seconds: float) -> float:
    return max(0.0, min(0.8 * clip_seconds, clip_seconds - MIN_INSIDE_FRACTION * duration))


def _plan(
    rng: np.random.Generator,
    clip_seconds: float,
    num_edits: int | None,
    sources: SynthesisedSources | RecordedSources = SYNTHESISED,
) -> tuple[list[Event], list[Event], list[tuple[str, str, float]]]:
    """Draws clip 1's events, the edits, and clip 2's events.

    Returns (events1, events2, edits) with edits as (operation, class, magnitude).
    """
    event_classes = sources.classes
    if num_edits is None:
        num_edits = 2 if rng.random() < TWO_EDIT_PROBABILITY else 1
    if num_edits == 0:
        return _plan_no_change(rng, clip_seconds, sources)
    if num_edits not in (1, 2):
        raise ValueError(f"num_edits must be 0, 1, 2 or None, not {num_edits!r}.")
    ops = [OPERATIONS[i] for i in rng.integers(len(OPERATIONS), size=num_edits)]
    n_add = ops.count("add")
    n_mod = num_edits - n_add
    if num_edits > len(event_classes):
        raise ValueError(f"{num_edits} edits need as many event classes, not {event_classes}.")
    # The last term only binds with fewer classes than the synthetic data's ten.
    max_extra = min(
        MAX_EVENTS_CLIP1 - n_mod, MAX_EVENTS_CLIP2 - n_mod - n_add, len(event_classes) - num_edits
    )
    n_extra = int(rng.integers(0, max_extra + 1))
    classes = [
        event_classes[i] for i in rng.choice(len(event_classes), num_edits + n_extra, replace=False)
    ]
    T = clip_seconds
    min_shift = MIN_SHIFT_FRACTION * T
    events1: list[Event] = []
    events2: list[Event] = []
    edits: list[tuple[str, str, float]] = []
    for op, cls in zip(ops, classes[:num_edits], strict=True):
        magnitude = 0.0
        if op == "add":
            events2.append(_new_event(rng, sources, cls, T))
        elif op == "remove":
            events1.append(_new_event(rng, sources, cls, T))
        elif op in ("louder", "quieter"):
            step = float(rng.uniform(*LOUDNESS_STEP_DB))
            lo_db = float(rng.uniform(LOUDNESS_EDIT_RANGE_DB[0], LOUDNESS_EDIT_RANGE_DB[1] - step))
            first, second = (lo_db, lo_db + step) if op == "louder" else (lo_db + step, lo_db)
            e1 = _new_event(rng, sources, cls, T, level_db=first)
            events1.append(e1)
            events2.append(dataclasses.replace(e1, level_db=second))
            magnitude = second - first
        elif op == "change":
            e1 = _new_event(rng, sources, cls, T)
            instance, duration = sources.other_instance(rng, e1)
            if duration != e1.duration:  # recordings: the other one's segment is shorter
                e1 = dataclasses.replace(e1, duration=duration)
            events1.append(e1)
            events2.append(dataclasses.replace(e1, **instance))
        else:  # earlier / later: the later position is at least min_shift after the earlier one
            duration = float(rng.uniform(*EVENT_FRACTION) * T)
            latest = _max_onset(duration, T)  # >= 0.7 T > min_shift for any clip length
            early = float(rng.uniform(0.0, latest - min_shift))
            late = float(rng.uniform(early + min_shift, latest))
            first, second = (late, early) if op == "earlier" else (early, late)
            e1 = _new_event(rng, sources, cls, T, onset_range=(first, first), duration=duration)
            events1.append(e1)
            events2.append(dataclasses.replace(e1, onset=second))
            magnitude = second - first
        edits.append((op, cls, magnitude))
    for cls in classes[num_edits:]:
        e = _new_event(rng, sources, cls, T)
        events1.append(e)
        events2.append(e)
    return events1, events2, edits


def _plan_no_change(
    rng: np.random.Generator,
    clip_seconds: float,
    sources: SynthesisedSources | RecordedSources,
) -> tuple[list[Event], list[Event], list[tuple[str, str, float]]]:
    """Clip 1 with 0-MAX_EVENTS_CLIP1 events; clip 2 the same events, each jittered in level and
    onset below every edit's threshold (see NO_CHANGE_*). Returns (events1, events2, [])."""
    event_classes = sources.classes
    count = int(rng.integers(0, min(MAX_EVENTS_CLIP1, len(event_classes)) + 1))
    classes = [event_classes[i] for i in rng.choice(len(event_classes), count, replace=False)]
    events1 = [_new_event(rng, sources, cls, clip_seconds) for cls in classes]
    jitter = NO_CHANGE_ONSET_JITTER_FRACTION * clip_seconds
    events2 = []
    for e in events1:
        onset = e.onset + float(rng.uniform(-jitter, jitter))
        events2.append(
            dataclasses.replace(
                e,
                onset=min(max(onset, 0.0), _max_onset(e.duration, clip_seconds)),
                level_db=e.level_db + float(rng.uniform(-1, 1) * NO_CHANGE_LEVEL_JITTER_DB),
            )
        )
    return events1, events2, []


def plan_pair(
    rng: np.random.Generator,
    clip_seconds: float,
    sources: SynthesisedSources | RecordedSources = SYNTHESISED,
    num_edits: int | None = None,
    no_change_fraction: float = 0.0,
) -> PairPlan:
    """Plans one pair: scene, background instance and level, events of both clips, edits, captions.

    Args:
      rng: the pair's generator (the plan is a function of its state and `sources`).
      clip_seconds: length of both clips.
      sources: where instances come from (SYNTHESISED, or a `RecordedSources`).
      num_edits: 0, 1 or 2 edits; None draws: no edit with probability `no_change_fraction`,
        else 2 with probability TWO_EDIT_PROBABILITY, else 1.
      no_change_fraction: in [0, 1); at 0 nothing is drawn for it, so the plans are those made
        before pairs without a difference existed.
    """
    if not 0.0 <= no_change_fraction < 1.0:
        raise ValueError(f"no_change_fraction={no_change_fraction!r} must be in [0, 1).")
    if num_edits is None and no_change_fraction > 0 and rng.random() < no_change_fraction:
        num_edits = 0
    scene = sources.scenes[int(rng.integers(len(sources.scenes)))]
    bg_gain = 10.0 ** ((BACKGROUND_DBFS + rng.uniform(-1, 1) * BACKGROUND_DBFS_SPREAD) / 20.0)
    background = sources.background(rng, scene, clip_seconds)
    events1, events2, edits = _plan(rng, clip_seconds, num_edits, sources)
    captions = make_captions([(op, cls) for op, cls, _ in edits], rng, NUM_CAPTIONS)
    return PairPlan(scene, background, float(bg_gain), events1, events2, edits, captions)


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
    no_change_fraction: float = 0.0,
    return_stems: bool = False,
) -> dict[str, Any]:
    """Synthesises one difference pair.

    Args:
      rng: the pair's generator (the result is a function of its state only).
      clip_seconds: length of both clips.
      sample_rate: Hz.
      num_edits, no_change_fraction: see `plan_pair`.
      return_stems: also return the scaled background and per-event signals of both clips.

    Returns:
      dict with audio1, audio2 ([N] float32 in [-1, 1]), captions (5 distinct str), scene,
      edits ([(op, class)]), edit_ops, edit_classes, edit_magnitudes (list of float: dB for
      louder/quieter, seconds for earlier/later, 0 otherwise; clip 2 minus clip 1), events1,
      events2 (lists of `Event`) and, with return_stems, background ([N]) and stems1/stems2
      ({class: [N]}), which sum to audio1/audio2.
    """
    sr = sample_rate
    plan = plan_pair(rng, clip_seconds, SYNTHESISED, num_edits, no_change_fraction)
    scene, bg_gain, edits = plan.scene, plan.background_gain, plan.edits
    events1, events2, captions = plan.events1, plan.events2, plan.captions
    background = bg_gain * synthesize_background(scene, plan.background["seed"], clip_seconds, sr)

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


def single_event_clip(
    rng: np.random.Generator,
    event: np.ndarray,
    clip_seconds: float,
    snr_db: tuple[float, float],
    sample_rate: int = features_lib.SAMPLE_RATE,
) -> dict[str, Any]:
    """A crop of one event over a background, at a signal-to-background ratio from U(snr_db).

    Draws from `rng`, in this order: the background scene (rain or traffic), its level (RMS
    BACKGROUND_DBFS +- BACKGROUND_DBFS_SPREAD dBFS), its seed, where the crop starts in the
    event, and the ratio (the crop's active RMS, `sounds.active_rms`, over the background's RMS).
    The sum is scaled down when its peak would exceed PEAK.

    Args:
      rng: the clip's generator (the event itself comes from its own seed, outside).
      event: [M] float waveform of the event, M >= clip_seconds * sample_rate samples.
      clip_seconds: length of the clip.
      snr_db: (low, high) bounds of the signal-to-background ratio in dB.

    Returns:
      wav [N] float32 (= event + background), event and background [N] float32 (the two parts
      as mixed), snr_db (float, the ratio drawn), scene (str).
    """
    n = int(round(clip_seconds * sample_rate))
    if event.shape[0] < n:
        raise ValueError(f"the event has {event.shape[0]} samples, fewer than the clip's {n}.")
    scene = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    bg_gain = 10.0 ** ((BACKGROUND_DBFS + rng.uniform(-1, 1) * BACKGROUND_DBFS_SPREAD) / 20.0)
    background = bg_gain * synthesize_background(
        scene, int(rng.integers(2**62)), clip_seconds, sample_rate
    )
    offset = int(rng.integers(event.shape[0] - n + 1))
    segment = event[offset : offset + n]
    ratio_db = float(rng.uniform(*snr_db))
    bg_rms = float(np.sqrt(np.mean(np.square(background, dtype=np.float64))))
    segment = segment * (bg_rms * 10.0 ** (ratio_db / 20.0) / active_rms(segment, sample_rate))
    wav = segment + background
    scale = min(1.0, PEAK / max(float(np.abs(wav).max()), 1e-9))
    return {
        "wav": (wav * scale).astype(_F32),
        "event": (segment * scale).astype(_F32),
        "background": (background * scale).astype(_F32),
        "snr_db": ratio_db,
        "scene": scene,
    }
