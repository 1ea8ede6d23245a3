"""The clip_pairs dataset: AudioDiffCaps-style pairs mixed from the user's own recordings.

AudioDiffCaps mixed ESC-50 foreground events (dog, footsteps, church bells, thunder, car horn,
chirping birds) over FSD50K backgrounds (rain, a car passing by). Its second clips are not
public, so this builder rebuilds the recipe from recordings a user can download: ESC-50, FSD50K
or any folder-per-class collection (`adc_jax.data.clip_sources` reads the layouts and splits).

A pair is planned exactly like a synthetic_adc pair (`adc_jax.data.synthetic.scenes.plan_pair`: a
background scene plus 0-2 events in clip 1, one or two of the seven edits, the same level and
timing rules and caption grammar), with real recordings as instances (`scenes.RecordedSources`):
  * an event is a segment of a recording's active part (`clip_sources.active_region`), as long as
    the planned duration or the whole active part if that is shorter, with EVENT_FADE_SECONDS
    raised-cosine fades, scaled so that its active RMS (`sounds.active_rms`) is the planned level
    above the background RMS; "change" takes another recording of the class; louder/quieter
    change the gain, earlier/later the onset;
  * the background is a clip-long stretch of a background recording (looped if shorter), scaled
    to the planned RMS; both clips share it and every untouched event.
Both clips are scaled by one gain so the louder peaks at no more than `scenes.PEAK`.

Classes: data.clip_classes "" takes the AudioDiffCaps foreground classes in the clips layout's
names (DEFAULT_CLIP_CLASSES), data.background_classes "" FSD50K's "Rain" and "Car_passing_by";
labels match whatever their case and separators. Foreground recordings that carry two requested
classes, and background recordings that carry a foreground class, are left out.

Class names: a label with a synthetic counterpart (SYNTHETIC_CLASSES: ESC-50's "church_bells",
FSD50K's "Church_bell", ...) takes the synthetic class's name and phrases ("bells": "the church
bells", "the chiming bells", ...), so difference accuracy reads its captions unchanged; any other
label gets a name and a phrase from its words (`grammar.label_class`: "Crying_baby" ->
"crying_baby", "a crying baby"), and `parse_caption(text, classes)` reads it when given the
run's classes (difference accuracy takes them from the labels). The scene is the background
label as words ("rain", "car passing by").

Each record also stores its `recipe` (JSON): for both clips, the background file (relative to
the background directory), where the clip starts in it and its gain, and every event's file
(relative to the clips directory), start and length in the file, onset in the clip and gain, all
in samples at the recipe's sample rate, with the linear gains applied to the decoded file's
samples. `render_recipe(recipe, clips_dir, background_dir)` re-renders the pair from the files;
the build mixes through the same function, so the result equals the stored audio.

Before decoding, `audio_io.check_clip_lengths` probes every file: truncated files are logged, and
ESC-50 clips (nominally 5 s) shorter than half that are logged too, and fail the build below
data.min_clip_fraction of it (FSD50K and folder recordings have no nominal length).

Speed: every recording a build uses is decoded and resampled once (in worker processes), kept
(events: their active part) in one float32 file that the pair-mixing workers map into memory;
no pair decodes a file.

The builder config's name is the spec plus a fingerprint of the inputs (metadata files, the
selected files' paths, sizes and modification times, classes, split sizes, seed, clip length,
sample rate and GENERATION_VERSION): changed inputs, a replaced recording included, build a new
copy next to the old one, and the log names the changed files and the old build to delete
(`adc_jax.data.source_files`). Processes that build
the same variant take turns under a file lock; an interrupted build is never read back.

Public API:
  ClipPairsSpec                          what a build is; `ClipPairsSpec.from_config(config.data)`.
  resolve_inputs(spec) -> ClipInputs     classes, recordings and fingerprint (decodes nothing).
  build_clip_pairs(data_dir, spec)       builds (once) and returns the tfds builder.
  render_recipe(recipe, clips_dir, background_dir)   the pair (audio1, audio2) from its files.
  mix_recipe(recipe, samples)            the mixing both use.
  recording_samples(clips_dir, background_dir, sample_rate)   the recordings as a SampleSource.
  recipe_levels(recipe, samples)         background dBFS and event levels (dB) of each clip.
  (`adc_jax.data.clip_jams` writes a recipe as one JAMS file per clip and renders from them.)
  ClipPairs                              the tfds GeneratorBasedBuilder ("clip_pairs").
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from adc_jax.data import builder as builder_lib
from adc_jax.data import clip_sources, paths, source_files
from adc_jax.data import features as features_lib
from adc_jax.data import writer as writer_lib
from adc_jax.data.audio_io import check_clip_lengths, load_audio
from adc_jax.data.errors import BadData
from adc_jax.data.synthetic import grammar, scenes
from adc_jax.data.synthetic.sounds import active_rms

SPLITS = clip_sources.SPLITS
# Bump when the records made from the same inputs change (forces a rebuild).
GENERATION_VERSION = 1
# Version of the recipe JSON's fields.
RECIPE_VERSION = 1
# The AudioDiffCaps foreground classes in each layout's names (data.clip_classes = "").
DEFAULT_CLIP_CLASSES = {
    "esc50": ("dog", "footsteps", "church_bells", "thunderstorm", "car_horn", "chirping_birds"),
    "fsd50k": (
        "Dog",
        "Walk_and_footsteps",
        "Church_bell",
        "Thunder",
        "Vehicle_horn_and_car_horn_and_honking",
        "Chirp_and_tweet",
    ),
    "folders": ("dog", "footsteps", "church_bells", "thunderstorm", "car_horn", "chirping_birds"),
}
# AudioDiffCaps' backgrounds in FSD50K's names (data.background_classes = "").
DEFAULT_BACKGROUND_CLASSES = ("Rain", "Car_passing_by")
# Labels (`clip_sources.normalize_label` form) named as a synthetic class in captions and labels.
SYNTHETIC_CLASSES = {
    "dog": "dog",
    "bark": "dog",
    "footsteps": "footsteps",
    "walk_and_footsteps": "footsteps",
    "church_bells": "bells",
    "church_bell": "bells",
    "thunderstorm": "thunder",
    "thunder": "thunder",
    "car_horn": "horn",
    "vehicle_horn_and_car_horn_and_honking": "horn",
    "chirping_birds": "birds",
    "chirp_and_tweet": "birds",
    "bird_vocalization_and_bird_call_and_bird_song": "birds",
    "rain": "rain",
    "car_passing_by": "car",
    "siren": "siren",
    "door_wood_knock": "knocking",
    "knock": "knocking",
}
# Raised-cosine fade-in and fade-out of every event segment (cut from a longer recording).
EVENT_FADE_SECONDS = 0.01
# Recordings of a foreground / background class each split needs ("change" swaps two).
MIN_EVENT_RECORDINGS = 2
MIN_BACKGROUND_RECORDINGS = 1

_F32 = np.float32
# The names of the clips and the backgrounds folder in a build's sources.json.
ROLE_DIRS = ("clips_dir", "background_dir")


# ----------------------------------------------------------------------------------- the spec


def _labels(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    return tuple(str(x).strip() for x in items if str(x).strip())


@dataclasses.dataclass(frozen=True)
class ClipPairsSpec(builder_lib.VariantSpec):
    """What defines a clip_pairs build (with the recordings it finds).

    Attributes:
      clips_dir: foreground recordings (ESC-50, FSD50K or folder-per-class layout).
      background_dir: background recordings, same layouts; "" = clips_dir.
      clip_classes / background_classes: labels as the data names them (a comma-separated
        string is split); () = DEFAULT_CLIP_CLASSES of the clips' layout /
        DEFAULT_BACKGROUND_CLASSES.
      num_train, num_validation, num_eval: pairs per split (each > 0).
      clip_seconds: length of each clip (> 0).
      seed: data seed (>= 0); pair i of split s comes from default_rng([seed, split_id(s), i]).
      sample_rate: Hz of the stored audio.
      min_clip_fraction: see `config.data.min_clip_fraction` (not part of the fingerprint: it
        only decides whether a build fails).
      no_change_fraction: share of pairs without a difference, in [0, 1) (`scenes.plan_pair`;
        named in the build's name, "_nc0p1", when > 0).
    """

    clips_dir: str
    background_dir: str = ""
    clip_classes: tuple[str, ...] = ()
    background_classes: tuple[str, ...] = ()
    num_train: int = 3000
    num_validation: int = 100
    num_eval: int = 200
    clip_seconds: float = 4.0
    seed: int = 0
    sample_rate: int = features_lib.SAMPLE_RATE
    min_clip_fraction: float = 0.0
    no_change_fraction: float = 0.0
    SPLITS = SPLITS

    def __post_init__(self) -> None:
        if not self.clips_dir:
            raise ValueError(
                "clip_pairs needs data.clips_dir: a directory of recordings in "
                f"{clip_sources.ACCEPTED_LAYOUTS}."
            )
        paths.require_local(self.clips_dir, "data.clips_dir", paths.SOURCE_WHY)
        paths.require_local(self.background_dir, "data.background_dir", paths.SOURCE_WHY)
        self.check_variant("pairs")
        if not 0.0 <= self.min_clip_fraction <= 1.0:
            raise ValueError(f"min_clip_fraction={self.min_clip_fraction!r} must be in [0, 1].")
        object.__setattr__(self, "clip_classes", _labels(self.clip_classes))
        object.__setattr__(self, "background_classes", _labels(self.background_classes))

    @classmethod
    def from_config(cls, data_config: Any) -> ClipPairsSpec:
        """The spec of a `config.data` section (its synth_seed is the data seed)."""
        return cls(
            clips_dir=os.path.expanduser(data_config.clips_dir),
            background_dir=os.path.expanduser(data_config.background_dir),
            clip_classes=data_config.clip_classes,
            background_classes=data_config.background_classes,
            **cls.variant_fields(data_config),
            min_clip_fraction=float(data_config.min_clip_fraction),
        )


# ------------------------------------------------------------------------- resolving the inputs


@dataclasses.dataclass(frozen=True)
class ClassSources:
    """One class of a build: its label as the data spells it, its name in captions and labels
    (the scene for backgrounds), and its recordings per split."""

    label: str
    name: str
    recordings: Mapping[str, tuple[clip_sources.Recording, ...]]


@dataclasses.dataclass(frozen=True)
class ClipInputs:
    """The resolved inputs of a build: the indexes, the classes and the fingerprint."""

    spec: ClipPairsSpec
    clips: clip_sources.SourceIndex
    backgrounds: clip_sources.SourceIndex
    events: tuple[ClassSources, ...]
    scenes: tuple[ClassSources, ...]
    fingerprint: str
    # Every file the build reads (`adc_jax.data.source_files`), part of the fingerprint.
    sources: source_files.Sources | None = dataclasses.field(default=None, repr=False)

    @property
    def config_name(self) -> str:
        return f"{self.spec.variant_name}_fp{self.fingerprint}"


def class_name(label: str) -> str:
    """The name of a foreground label in captions and edit labels (see the module docstring)."""
    return SYNTHETIC_CLASSES.get(clip_sources.normalize_label(label)) or grammar.label_class(label)


def scene_name(label: str) -> str:
    """The scene of a background label: its words ("Car_passing_by" -> "car passing by")."""
    return " ".join(grammar.label_words(grammar.label_class(label)))


def _unique(names: list[tuple[str, str]], what: str, setting: str) -> None:
    seen: dict[str, str] = {}
    for label, name in names:
        if not name:
            raise BadData(f"{setting}: {label!r} has no words to name it in captions.")
        if name in seen:
            raise BadData(
                f"{setting}: {seen[name]!r} and {label!r} are the same {what} ({name!r}) in "
                "captions; list only one of them."
            )
        seen[name] = label


# Words a reader hears as one: irregular plurals -> singular (regular ones lose their "s").
_SINGULAR = {
    "children": "child", "feet": "foot", "geese": "goose", "men": "man", "mice": "mouse",
    "people": "person", "teeth": "tooth", "women": "woman", "oxen": "ox", "wolves": "wolf",
    "leaves": "leaf", "knives": "knife", "calves": "calf", "sheep": "sheep", "fish": "fish",
}  # fmt: skip
_ARTICLES = ("the", "a", "an", "some")


def _singular(word: str) -> str:
    if word in _SINGULAR:
        return _SINGULAR[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


def _heard_as(phrase: str) -> tuple[str, ...]:
    """A phrase as a reader tells it from another: its words without a leading article, each
    singular ("the barking dogs" -> ("barking", "dog"))."""
    words = phrase.lower().split()
    if words and words[0] in _ARTICLES:
        words = words[1:]
    return tuple(_singular(w) for w in words)


def _told_apart(phrases: list[tuple[str, tuple[str, ...]]], what: str, setting: str) -> None:
    """Refuses classes that a reader of the captions could not tell apart: two classes whose
    phrases differ only in number or article ("dog" / "dogs": "add a dog" vs "add dogs"),
    even where the parser reads them back correctly.

    Args:
      phrases: (label, the noun phrases naming its class in captions) per class.
    """
    heard: dict[tuple[str, ...], tuple[str, str]] = {}
    for label, texts in phrases:
        for text in texts:
            key = _heard_as(text)
            other = heard.get(key)
            if other is not None and other[0] != label:
                raise BadData(
                    f"{setting}: {other[0]!r} and {label!r} read alike in captions "
                    f"({other[1]!r} and {text!r}), so a reader could not tell which {what} "
                    "changed; list only one of them."
                )
            heard[key] = (label, text)


def _data_label(index: clip_sources.SourceIndex, label: str) -> str:
    """The index's spelling of a requested label ("car horn" -> "car_horn")."""
    key = clip_sources.normalize_label(label)
    return next(lb for lb in index.labels if clip_sources.normalize_label(lb) == key)


def _class_sources(
    index: clip_sources.SourceIndex,
    names: list[tuple[str, str]],
    chosen: Mapping[str, Mapping[str, list[clip_sources.Recording]]],
) -> tuple[ClassSources, ...]:
    """The ClassSources of (requested label, name) pairs and the recordings chosen per split."""
    return tuple(
        ClassSources(
            _data_label(index, label), name, {s: tuple(rs) for s, rs in chosen[label].items()}
        )
        for label, name in names
    )


def _fingerprint(
    spec: ClipPairsSpec,
    indexes: list[clip_sources.SourceIndex],
    groups: list[tuple[str, tuple[ClassSources, ...]]],
) -> tuple[str, source_files.Sources]:
    """(the build's fingerprint, its Sources): settings, metadata contents and every selected
    recording's path, size and modification time (`adc_jax.data.source_files`)."""
    h = hashlib.sha256()
    head = {
        "generation": GENERATION_VERSION,
        "sizes": spec.split_sizes,
        "clip_seconds": repr(spec.clip_seconds),
        "seed": spec.seed,
        "sample_rate": spec.sample_rate,
        "layouts": [index.layout for index in indexes],
        "classes": {role: [(c.label, c.name) for c in cs] for role, cs in groups},
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    files: list[source_files.SourceFile] = []
    for i, index in enumerate(indexes):
        for name in index.metadata:
            h.update(f"\nmetadata {i} {name}\n".encode())
            with open(os.path.join(index.root, name), "rb") as f:
                h.update(f.read())
            files += source_files.stat_files(index.root, [name], prefix=f"{ROLE_DIRS[i]}:")
    for (role, classes), index in zip(groups, (indexes[0], indexes[-1]), strict=True):
        for c in classes:
            for split in SPLITS:
                for r in c.recordings[split]:
                    (f,) = source_files.stat_files(index.root, [r.path])
                    files.append(dataclasses.replace(f, name=f"{role}:{f.name}"))
                    h.update(f"\n{role} {c.name} {split} {r.path} {f.size} {f.mtime_ns}".encode())
    settings = {"head": head, "roots": [index.root for index in indexes]}
    return h.hexdigest()[:16], source_files.Sources(settings, tuple(files))


def resolve_inputs(spec: ClipPairsSpec) -> ClipInputs:
    """Indexes the recordings, picks the classes and their files per split, fingerprints them.

    Reads metadata and file sizes only (no audio is decoded).

    Raises:
      FileNotFoundError: a directory, metadata file or selected audio file is missing.
      ValueError: bad metadata, a class with no or too few recordings, classes listed twice or
        whose captions could not be told apart.
    """
    clips = clip_sources.index_sources(spec.clips_dir)
    same = not spec.background_dir or os.path.abspath(
        os.path.expanduser(spec.background_dir)
    ) == os.path.abspath(os.path.expanduser(spec.clips_dir))
    backgrounds = clips if same else clip_sources.index_sources(spec.background_dir)
    event_labels = spec.clip_classes or DEFAULT_CLIP_CLASSES[clips.layout]
    scene_labels = spec.background_classes or DEFAULT_BACKGROUND_CLASSES
    if len(event_labels) < 2:
        raise BadData(
            f"data.clip_classes={','.join(event_labels)!r}: pairs need two or more foreground "
            "classes (a pair with two edits changes two classes)."
        )
    both = {clip_sources.normalize_label(x) for x in event_labels} & {
        clip_sources.normalize_label(x) for x in scene_labels
    }
    if both:
        raise BadData(
            f"{sorted(both)} are listed as foreground (data.clip_classes) and background "
            "(data.background_classes) classes; a class can only be one of them."
        )
    event_names = [(label, class_name(label)) for label in event_labels]
    _unique(event_names, "event class", "data.clip_classes")
    scene_names = [(label, scene_name(label)) for label in scene_labels]
    _unique(scene_names, "scene", "data.background_classes")
    _told_apart(
        [(label, sum(grammar.label_phrases(name), ())) for label, name in event_names],
        "sound",
        "data.clip_classes",
    )
    _told_apart(
        [(label, (name,)) for label, name in scene_names], "scene", "data.background_classes"
    )
    try:
        grammar.check_phrasing([name for _, name in event_names])
    except ValueError as e:
        raise BadData(f"data.clip_classes: {e}") from None
    chosen_events = clip_sources.select_classes(
        clips,
        event_labels,
        role="foreground",
        min_per_split=MIN_EVENT_RECORDINGS,
        setting="data.clip_classes",
        dir_setting="data.clips_dir",
    )
    chosen_scenes = clip_sources.select_classes(
        backgrounds,
        scene_labels,
        role="background",
        min_per_split=MIN_BACKGROUND_RECORDINGS,
        exclude=event_labels,
        setting="data.background_classes",
        dir_setting="data.background_dir",
    )
    events = _class_sources(clips, event_names, chosen_events)
    scene_sources = _class_sources(backgrounds, scene_names, chosen_scenes)
    indexes = [clips] if same else [clips, backgrounds]
    fingerprint, sources = _fingerprint(
        spec, indexes, [("event", events), ("background", scene_sources)]
    )
    return ClipInputs(spec, clips, backgrounds, events, scene_sources, fingerprint, sources)


# --------------------------------------------------------------------------------- mixing


def _fade(n: int, fade: int) -> np.ndarray:
    """[n] float32 raised-cosine fade-in and fade-out of `fade` samples (shorter if n is)."""
    env = np.ones(n, _F32)
    m = min(fade, n // 2)
    if m > 0:
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, m + 2)[1:-1])).astype(_F32)
        env[:m] = ramp
        env[n - m :] = ramp[::-1]
    return env


def _background_samples(x: np.ndarray, start: int, n: int) -> np.ndarray:
    """n samples of x from `start`, looping over x's end: [n] float32."""
    if start + n <= x.shape[0]:
        return np.asarray(x[start : start + n], _F32)
    return np.asarray(x[(start + np.arange(n)) % x.shape[0]], _F32)


def _event_samples(x: np.ndarray, offset: int, ev: Mapping[str, Any], fade: int) -> np.ndarray:
    """The faded segment of an event (x starts at sample `offset` of its file): [length]."""
    a = int(ev["start"]) - offset
    seg = np.asarray(x[max(a, 0) : a + int(ev["length"])], _F32)
    if a < 0 or seg.shape[0] != int(ev["length"]):
        raise BadData(
            f"The recipe takes samples {ev['start']}..{int(ev['start']) + int(ev['length'])} of "
            f"{ev['file']!r}, which has only {offset + x.shape[0]} (a different file than the "
            "one the pair was made from?)."
        )
    return seg * _fade(seg.shape[0], fade)


# samples(role, file) -> (samples, offset): the decoded file (or a part of it starting at sample
# `offset`); role is "background" or "event".
SampleSource = Callable[[str, str], tuple[np.ndarray, int]]


def mix_recipe(recipe: Mapping[str, Any], samples: SampleSource) -> tuple[np.ndarray, np.ndarray]:
    """Mixes both clips of a recipe: ([N] float32, [N] float32).

    Each clip is its background (looped from `start`) times its gain plus, for every event, the
    faded segment [start, start + length) of its file times its gain, added from `onset`
    (cropped at the clip's end).
    """
    n = int(recipe["clip_samples"])
    fade = int(recipe["fade_samples"])
    clips = []
    for clip in recipe["clips"]:
        bg = clip["background"]
        x, offset = samples("background", bg["file"])
        out = bg["gain"] * _background_samples(x, int(bg["start"]) - offset, n)
        for ev in clip["events"]:
            x, offset = samples("event", ev["file"])
            seg = _event_samples(x, offset, ev, fade)
            onset = int(ev["onset"])
            m = min(seg.shape[0], n - onset)
            if m > 0:
                out[onset : onset + m] += ev["gain"] * seg[:m]
        clips.append(out.astype(_F32))
    return clips[0], clips[1]


def render_recipe(
    recipe: str | Mapping[str, Any], clips_dir: str, background_dir: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Re-renders a stored pair from the recordings its recipe names.

    Args:
      recipe: a record's `recipe` (JSON text or bytes, or the parsed dict).
      clips_dir: the foreground recordings' directory (the build's data.clips_dir).
      background_dir: the background recordings' directory ("" = clips_dir).

    Returns:
      (audio1, audio2): [N] float32 in [-1, 1]; `features.to_int16` of them equals the stored
      audio1/audio2 when the files are the ones the pair was built from.

    Raises:
      AudioError: a file is missing or unreadable.
    """
    recipe = parse_recipe(recipe)
    return mix_recipe(
        recipe, recording_samples(clips_dir, background_dir, int(recipe["sample_rate"]))
    )


def parse_recipe(recipe: str | bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    """A record's `recipe` (JSON text or bytes, or the parsed dict) as a dict."""
    if isinstance(recipe, bytes):
        recipe = recipe.decode("utf-8")
    if isinstance(recipe, str):
        if not recipe:
            raise BadData("This record has no recipe (only clip_pairs records have one).")
        recipe = json.loads(recipe)
    return recipe


def recording_samples(
    clips_dir: str, background_dir: str, sample_rate: int, cache_size: int | None = None
) -> SampleSource:
    """The SampleSource of the recordings themselves: each file decoded whole at sample_rate
    (as the build decodes it), kept in a cache of `cache_size` files (None: every file).

    Args:
      clips_dir: the foreground recordings' directory; background_dir: the backgrounds' ("" =
        clips_dir). Files are named relative to them, as recipes name them.
    """
    dirs = {"event": clips_dir, "background": background_dir or clips_dir}

    @functools.lru_cache(maxsize=cache_size)
    def samples(role: str, file: str) -> tuple[np.ndarray, int]:
        return load_audio(os.path.join(os.path.expanduser(dirs[role]), file), sample_rate), 0

    return samples


def recipe_levels(
    recipe: Mapping[str, Any], samples: SampleSource
) -> list[tuple[float, list[float]]]:
    """The levels the planner set, measured on a recipe as the build measures them.

    Returns:
      Per clip, (the background's RMS in dBFS, each event's level in dB above it): an event's
      level is the active RMS (`sounds.active_rms`) of its faded segment times its gain, over
      the RMS of the clip-long background segment times its gain.
    """
    n = int(recipe["clip_samples"])
    fade = int(recipe["fade_samples"])
    sr = int(recipe["sample_rate"])
    out = []
    for clip in recipe["clips"]:
        bg = clip["background"]
        x, offset = samples("background", bg["file"])
        segment = _background_samples(x, int(bg["start"]) - offset, n)
        rms = float(np.sqrt(np.mean(np.square(segment, dtype=np.float64)))) * bg["gain"]
        levels = []
        for ev in clip["events"]:
            x, offset = samples("event", ev["file"])
            level = active_rms(_event_samples(x, offset, ev, fade), sr) * ev["gain"]
            levels.append(20.0 * np.log10(max(level, 1e-12) / max(rms, 1e-12)))
        out.append((20.0 * np.log10(max(rms, 1e-12)), levels))
    return out


# ------------------------------------------------------------- decoded sources and pair making


@dataclasses.dataclass(frozen=True)
class _Context:
    """What a pair-making process needs: the plan's sources per split and the decoded samples.

    table: raw float32 file of every kept recording; kept: (role, file) -> (table offset,
    kept length, offset of the kept part in the decoded file); sources: split -> what the
    planner draws from; files: split -> role -> name -> files in pool order; labels: role ->
    name -> data label. Roles are "event" and "background".
    """

    table: str
    kept: dict[tuple[str, str], tuple[int, int, int]]
    sources: dict[str, scenes.RecordedSources]
    files: dict[str, dict[str, dict[str, tuple[str, ...]]]]
    labels: dict[str, dict[str, str]]
    seed: int
    clip_seconds: float
    sample_rate: int
    no_change_fraction: float = 0.0


@functools.lru_cache(maxsize=2)
def _load_context(path: str) -> tuple[_Context, np.ndarray]:
    """The context written by `_prepared_sources` and its sample table (memory-mapped)."""
    with open(path, "rb") as f:
        ctx = pickle.load(f)
    size = os.path.getsize(ctx.table) // 4
    table = np.memmap(ctx.table, dtype=_F32, mode="r", shape=(size,)) if size else np.zeros(0)
    return ctx, table


def _load_item(item: tuple[str, int, str, str]) -> tuple[np.ndarray, int, int]:
    """Decodes one recording (top level: worker processes run it)."""
    path, sample_rate, role, where = item
    return clip_sources.load_recording(path, sample_rate, role, where=where)


def _check_lengths(
    index: clip_sources.SourceIndex, role: str, files: list[tuple[str, str]], min_fraction: float
) -> None:
    """Probes the files before decoding: warns about truncated ones; with a nominal length
    (ESC-50: 5 s) also about short ones, and fails on clips under min_fraction of it."""
    if index.nominal_seconds:
        check_clip_lengths(
            files,
            dataset=f"clip_pairs {role} recordings in {index.name}",
            nominal_seconds=index.nominal_seconds,
            min_fraction=min_fraction,
        )
    else:  # recordings of any length: only truncated files are reported
        check_clip_lengths(
            files,
            dataset=f"clip_pairs {role} recordings in {index.name}",
            nominal_seconds=1.0,
            min_fraction=0.0,
            short_fraction=0.0,
        )


@contextlib.contextmanager
def _prepared_sources(inputs: ClipInputs, work_dir: str, num_workers: int | None) -> Iterator[str]:
    """Decodes every recording once into a sample table; yields the path of the context file.

    The table and the context live in a temporary folder under work_dir, removed on exit.
    """
    spec = inputs.spec
    sr = spec.sample_rate
    items: list[tuple[str, int, str, str]] = []
    keys: list[tuple[str, str]] = []
    for role, index, classes in (
        ("event", inputs.clips, inputs.events),
        ("background", inputs.backgrounds, inputs.scenes),
    ):
        files = []
        for c in classes:
            for split in SPLITS:
                for r in c.recordings[split]:
                    keys.append((role, r.path))
                    items.append((os.path.join(index.root, r.path), sr, role, r.where))
                    files.append((r.where, items[-1][0]))
        _check_lengths(
            index, "foreground" if role == "event" else role, files, spec.min_clip_fraction
        )
    os.makedirs(work_dir, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=".clip_sources.", dir=work_dir)
    try:
        table_path = os.path.join(folder, "samples.f32")
        kept: dict[tuple[str, str], tuple[int, int, int]] = {}
        full: dict[tuple[str, str], int] = {}
        start = time.perf_counter()
        position = 0
        workers = writer_lib.resolve_workers(num_workers, len(items))
        with (
            open(table_path, "wb") as table,
            writer_lib.map_in_order(_load_item, items, workers) as loaded,
        ):
            for key, (wav, offset, length) in zip(keys, loaded, strict=True):
                table.write(np.ascontiguousarray(wav, _F32).tobytes())
                kept[key] = (position, int(wav.shape[0]), int(offset))
                full[key] = int(length)
                position += int(wav.shape[0])
        logging.info(
            "clip_pairs: decoded %d recordings at %d Hz in %.1f s (%d processes; %.0f MiB kept).",
            len(items),
            sr,
            time.perf_counter() - start,
            workers,
            position * 4 / 2**20,
        )
        sources, files = {}, {}
        for split in SPLITS:
            ev = {c.name: tuple(r.path for r in c.recordings[split]) for c in inputs.events}
            bg = {c.name: tuple(r.path for r in c.recordings[split]) for c in inputs.scenes}
            files[split] = {"event": ev, "background": bg}
            sources[split] = scenes.RecordedSources(
                # (where the kept active part starts in its file, its length)
                events={
                    name: tuple((kept[("event", p)][2], kept[("event", p)][1]) for p in paths)
                    for name, paths in ev.items()
                },
                backgrounds={
                    name: tuple(full[("background", p)] for p in paths)
                    for name, paths in bg.items()
                },
                sample_rate=sr,
            )
        ctx = _Context(
            table=table_path,
            kept=kept,
            sources=sources,
            files=files,
            labels={
                "event": {c.name: c.label for c in inputs.events},
                "background": {c.name: c.label for c in inputs.scenes},
            },
            seed=spec.seed,
            clip_seconds=spec.clip_seconds,
            sample_rate=sr,
            no_change_fraction=spec.no_change_fraction,
        )
        context_path = os.path.join(folder, "context.pkl")
        with open(context_path, "wb") as f:
            pickle.dump(ctx, f)
        yield context_path
    finally:
        _load_context.cache_clear()
        shutil.rmtree(folder, ignore_errors=True)


def _pair_recipe(
    ctx: _Context, table: np.ndarray, split: str, plan: scenes.PairPlan
) -> tuple[dict[str, Any], SampleSource]:
    """The recipe of a plan (gains before the peak scaling) and the sample source it reads."""
    sr = ctx.sample_rate
    n = int(round(ctx.clip_seconds * sr))
    fade = int(round(EVENT_FADE_SECONDS * sr))
    files = ctx.files[split]

    def samples(role: str, file: str) -> tuple[np.ndarray, int]:
        position, length, offset = ctx.kept[(role, file)]
        return table[position : position + length], offset

    bg_file = files["background"][plan.scene][plan.background["source"]]
    x, offset = samples("background", bg_file)
    segment = _background_samples(x, plan.background["start"] - offset, n)
    bg_rms = float(np.sqrt(np.mean(np.square(segment, dtype=np.float64))))
    background = {
        "file": bg_file,
        "label": ctx.labels["background"][plan.scene],
        "start": int(plan.background["start"]),
        "gain": plan.background_gain / max(bg_rms, 1e-9),
    }
    clips = []
    for events in (plan.events1, plan.events2):
        placed = []
        for e in events:
            ev = {
                "class": e.cls,
                "label": ctx.labels["event"][e.cls],
                "file": files["event"][e.cls][e.source],
                "start": int(e.start),
                "length": int(round(e.duration * sr)),
                "onset": int(round(e.onset * sr)),
            }
            x, offset = samples("event", ev["file"])
            level = active_rms(_event_samples(x, offset, ev, fade), sr)
            ev["gain"] = plan.background_gain * 10.0 ** (e.level_db / 20.0) / level
            placed.append(ev)
        clips.append({"background": dict(background), "events": placed})
    recipe = {
        "version": RECIPE_VERSION,
        "sample_rate": sr,
        "clip_samples": n,
        "fade_samples": fade,
        "clips": clips,
    }
    return recipe, samples


def _scaled(recipe: dict[str, Any], scale: float) -> dict[str, Any]:
    out = json.loads(json.dumps(recipe))
    for clip in out["clips"]:
        clip["background"]["gain"] *= scale
        for ev in clip["events"]:
            ev["gain"] *= scale
    return out


def _example(task: tuple[str, str, int]) -> dict[str, Any]:
    """One stored example: pair `index` of `split`, planned and mixed from the context."""
    context_path, split, index = task
    ctx, table = _load_context(context_path)
    rng = np.random.default_rng([ctx.seed, builder_lib.split_id(split, SPLITS), index])
    plan = scenes.plan_pair(
        rng, ctx.clip_seconds, ctx.sources[split], no_change_fraction=ctx.no_change_fraction
    )
    recipe, samples = _pair_recipe(ctx, table, split, plan)
    peak = max(float(np.abs(c).max()) for c in mix_recipe(recipe, samples))
    recipe = _scaled(recipe, min(1.0, scenes.PEAK / max(peak, 1e-9)))
    audio1, audio2 = mix_recipe(recipe, samples)
    key = f"{split}_{index:06d}"
    return {
        "key": key,
        "audio1": features_lib.to_int16(audio1),
        "audio2": features_lib.to_int16(audio2),
        "captions": plan.captions,
        "scene": plan.scene,
        "caption_tiers": np.zeros((0,), np.int32),
        "recipe": json.dumps(recipe, sort_keys=True, separators=(",", ":")),
        "edit_ops": [op for op, _, _ in plan.edits],
        "edit_classes": [cls for _, cls, _ in plan.edits],
        "edit_magnitudes": np.asarray([m for _, _, m in plan.edits], np.float32),
    }


def _serialized_example(task: tuple[str, str, int]) -> bytes:
    """The stored record of `_example(task)` (top level: worker processes run it)."""
    return writer_lib.serialize_example(_example(task))


# ------------------------------------------------------------------------------- the builder


@dataclasses.dataclass(eq=False, kw_only=True)
class ClipPairsConfig(builder_lib.BuildConfig):
    """A clip_pairs build: its resolved inputs (which name it) and the build parallelism."""

    # Not in the repr: tfds logs the config, and the inputs list every recording.
    inputs: ClipInputs = dataclasses.field(repr=False)

    @classmethod
    def from_inputs(cls, inputs: ClipInputs, num_workers: int | None = None) -> ClipPairsConfig:
        spec = inputs.spec
        return cls(
            name=inputs.config_name,
            inputs=inputs,
            num_workers=num_workers,
            sources=inputs.sources,
            description=f"{spec.num_train}/{spec.num_validation}/{spec.num_eval} pairs of "
            f"{spec.clip_seconds:g} s at {spec.sample_rate} Hz, seed {spec.seed}, events "
            f"{[c.label for c in inputs.events]} from {inputs.clips.name}, backgrounds "
            f"{[c.label for c in inputs.scenes]} from {inputs.backgrounds.name}.",
        )


class ClipPairs(builder_lib.Builder):
    """tfds builder of pairs mixed from the user's recordings (see the module docstring).

    Records are stored in index order: record i of a split is the pair with key
    "<split>_<i:06d>", planned from default_rng([seed, split_id, i]).
    """

    name = "clip_pairs"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "AudioDiffCaps-style pairs from ESC-50/FSD50K/folder recordings."}
    HOMEPAGE = "https://arxiv.org/abs/2308.11923"

    def _description(self) -> str:
        return (
            "Audio difference captioning pairs mixed from real recordings: a "
            "background with 0-2 foreground events; clip 2 is clip 1 after 1-2 edits, "
            "described by 5 reference captions. " + self.builder_config.description
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager  # the user provides the recordings
        sizes = self.builder_config.inputs.spec.split_sizes
        return {split: self._generate_examples(split, num) for split, num in sizes.items()}

    def _generate_examples(self, split: str, num: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """tfds' standard example stream, in one process (`_generate_splits` writes the same)."""
        c = self.builder_config
        with _prepared_sources(c.inputs, os.path.dirname(self.data_dir), 1) as context:
            for i in range(num):
                ex = _example((context, split, i))
                yield ex["key"], ex

    def _generate_splits(self, dl_manager: Any, download_config: Any) -> list[tfds.core.SplitInfo]:
        """Decodes every recording once, then mixes and writes the pairs with the shared writer.

        Worker processes make and serialise pairs (reading the decoded samples from a
        memory-mapped table); the main process writes them in index order inside tfds'
        temporary build folder (see `adc_jax.data.writer`).
        """
        del dl_manager, download_config
        c = self.builder_config
        with _prepared_sources(c.inputs, self.data_dir, c.num_workers) as context:
            return self._write_splits(
                {
                    split: (_serialized_example, [(context, split, i) for i in range(num)])
                    for split, num in c.inputs.spec.split_sizes.items()
                }
            )


def build_clip_pairs(
    data_dir: str, spec: ClipPairsSpec, *, num_workers: int | None = None
) -> tfds.core.DatasetBuilder:
    """Returns the prepared clip_pairs builder of `spec`, building it if missing.

    Builds co-exist in one data_dir under clip_pairs/<size>_fp<fingerprint>/<version>. tfds
    writes into a temporary incomplete.* folder renamed when every split is written, so an
    interrupted build is never read back: the next call builds again (and removes leftovers).

    Args:
      data_dir: root directory of tfds datasets ("~" is expanded).
      spec: the build (`ClipPairsSpec.from_config(config.data)` for a config's).
      num_workers: decoding and mixing processes (default: all CPUs); does not change the data.

    Returns:
      The builder; read a split with `builder.as_data_source(split)`.

    Raises:
      FileNotFoundError, ValueError: see `resolve_inputs` (missing files, bad metadata, classes).
      AudioError: a recording cannot be decoded or is silent (names the file and its row).
    """
    data_dir = os.path.expanduser(data_dir)
    inputs = resolve_inputs(spec)
    config = ClipPairsConfig.from_inputs(inputs, num_workers)
    return ClipPairs.prepare(config, data_dir, "pairs")
