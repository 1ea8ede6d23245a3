"""Caption grammar of the synthetic_adc dataset and the parser that reads captions back into edits.

A caption turns clip 1 into clip 2 with one or two lower-case imperative edits, in the style of
AudioDiffCaps ("make the thunder quieter", "add the sound of a dog barking", "remove the birds and
make the horn louder"). An edit is an (operation, event class) pair.

`make_captions` writes several different references for the same edits by drawing a template per
operation, a phrase per class, the order of the edits and the connective between them.
`parse_caption` inverts the grammar: it returns the set of edits a caption asks for. It reads every
reference the grammar produces exactly (the tests check all of them) and is lenient on model
outputs: it keys on single words ("louder", "dog", "delay") inside clauses split at "and", "then"
and commas, so partial or garbled text still gives its best-effort set of edits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

# The seven edit operations, in the order used by metrics and tables.
OPERATIONS = ("add", "remove", "louder", "quieter", "change", "earlier", "later")
# Foreground event classes of the synthetic data.
EVENT_CLASSES = (
    "thunder",
    "dog",
    "birds",
    "footsteps",
    "rain",
    "bells",
    "horn",
    "car",
    "siren",
    "knocking",
)
# Background scenes (as in AudioDiffCaps: rain and road traffic).
BACKGROUNDS = ("rain", "traffic")

Edit = tuple[str, str]

# -------------------------------------------------------------------------------------- grammar

# Noun phrases naming an event that is already there ("{the}" slot of a template).
DEFINITE: dict[str, tuple[str, ...]] = {
    "thunder": ("the thunder", "the thunderclap", "the rumble of thunder", "the rumbling thunder"),
    "dog": ("the dog barking", "the barking dog", "the dog", "the barking"),
    "birds": ("the birds", "the birds chirping", "the chirping birds", "the birdsong"),
    "footsteps": ("the footsteps", "the steps", "the person walking", "the walking"),
    "rain": ("the heavy rain", "the rain shower", "the downpour", "the pouring rain"),
    "bells": ("the church bells", "the bells", "the bell ringing", "the chiming bells"),
    "horn": ("the car horn", "the horn", "the honking", "the horn honking"),
    "car": ("the passing car", "the car passing by", "the car driving past", "the car"),
    "siren": ("the siren", "the ambulance siren", "the police siren", "the wailing siren"),
    "knocking": ("the knocking", "the knock on the door", "the knocks", "the door knocking"),
}
# Noun phrases introducing a new event ("{a}" slot, used by "add").
INDEFINITE: dict[str, tuple[str, ...]] = {
    "thunder": ("thunder", "a thunderclap", "a rumble of thunder", "rumbling thunder"),
    "dog": ("a dog barking", "a barking dog", "dog barks", "a dog"),
    "birds": ("birds chirping", "chirping birds", "bird calls", "birdsong"),
    "footsteps": ("footsteps", "someone walking", "a person walking", "steps"),
    "rain": ("heavy rain", "a rain shower", "a downpour", "pouring rain"),
    "bells": ("church bells", "bells ringing", "a bell ringing", "chiming bells"),
    "horn": ("a car horn", "a horn honking", "honking", "a horn"),
    "car": ("a car passing by", "a passing car", "a car driving past", "a car going by"),
    "siren": ("a siren", "an ambulance siren", "a police siren", "a wailing siren"),
    "knocking": ("knocking", "a knock on the door", "someone knocking", "knocks on a door"),
}
# Imperative templates per operation; each has exactly one slot, {a} or {the}.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": ("add {a}", "add the sound of {a}", "insert {a}", "include {a}", "introduce {a}"),
    "remove": (
        "remove {the}",
        "delete {the}",
        "take out {the}",
        "get rid of {the}",
        "remove the sound of {the}",
        "eliminate {the}",
    ),
    "louder": (
        "make {the} louder",
        "turn up {the}",
        "increase the volume of {the}",
        "raise the volume of {the}",
        "boost {the}",
        "make {the} sound louder",
        "amplify {the}",
    ),
    "quieter": (
        "make {the} quieter",
        "make {the} softer",
        "turn down {the}",
        "decrease the volume of {the}",
        "lower the volume of {the}",
        "reduce the volume of {the}",
    ),
    "change": (
        "replace {the} with a different one",
        "swap {the} for another one",
        "change {the} to a different one",
        "make {the} sound different",
        "replace {the} with another sound",
    ),
    "earlier": (
        "make {the} start earlier",
        "move {the} earlier",
        "shift {the} earlier",
        "make {the} happen sooner",
        "have {the} begin earlier",
        "make {the} come earlier",
    ),
    "later": (
        "make {the} start later",
        "move {the} later",
        "shift {the} later",
        "delay {the}",
        "make {the} happen later",
        "have {the} begin later",
        "make {the} come later",
    ),
}
# Ways of joining two edits.
CONNECTIVES = (" and ", ", and ", ", then ", " and then ", " and also ")


def _fill(template: str, phrase: str) -> str:
    return template.replace("{a}", phrase).replace("{the}", phrase)


def _phrases(op: str, cls: str) -> tuple[str, ...]:
    return INDEFINITE[cls] if op == "add" else DEFINITE[cls]


def caption_edit(op: str, cls: str, rng: np.random.Generator) -> str:
    """One random phrasing of a single edit, e.g. ("louder", "dog") -> "turn up the barking"."""
    template = TEMPLATES[op][rng.integers(len(TEMPLATES[op]))]
    phrases = _phrases(op, cls)
    return _fill(template, phrases[rng.integers(len(phrases))])


def _random_caption(edits: Sequence[Edit], rng: np.random.Generator) -> str:
    edits = list(edits)
    if len(edits) == 1:
        return caption_edit(*edits[0], rng)
    order = rng.permutation(len(edits))
    edits = [edits[i] for i in order]
    if len(edits) == 2 and edits[0][0] == edits[1][0] and rng.random() < 0.4:
        # Same operation on two classes: "remove the dog and the bells".
        op = edits[0][0]
        template = TEMPLATES[op][rng.integers(len(TEMPLATES[op]))]
        both = " and ".join(
            _phrases(op, cls)[rng.integers(len(_phrases(op, cls)))] for _, cls in edits
        )
        return _fill(template, both)
    parts = [caption_edit(op, cls, rng) for op, cls in edits]
    text = parts[0]
    for part in parts[1:]:
        text += CONNECTIVES[rng.integers(len(CONNECTIVES))] + part
    return text


def make_captions(edits: Sequence[Edit], rng: np.random.Generator, num: int = 5) -> list[str]:
    """`num` different reference captions for the same edits.

    Args:
      edits: (operation, event class) pairs, each class at most once.
      rng: the random generator of the pair (the result is a function of its state).
      num: number of references; they are all distinct.
    """
    if not edits:
        raise ValueError("A synthetic pair needs at least one edit to describe.")
    for op, cls in edits:
        if op not in OPERATIONS or cls not in EVENT_CLASSES:
            raise ValueError(
                f"Unknown edit {(op, cls)!r}: operations are {OPERATIONS}, classes {EVENT_CLASSES}."
            )
    captions: list[str] = []
    for _ in range(100 * num):
        caption = _random_caption(edits, rng)
        if caption not in captions:
            captions.append(caption)
            if len(captions) == num:
                return captions
    raise RuntimeError(f"Could not phrase {edits!r} in {num} different ways.")


def all_single_edit_captions() -> dict[Edit, list[str]]:
    """Every caption the grammar can write for a single edit (for tests and vocabulary counts)."""
    out: dict[Edit, list[str]] = {}
    for op in OPERATIONS:
        for cls in EVENT_CLASSES:
            out[(op, cls)] = [_fill(t, p) for t in TEMPLATES[op] for p in _phrases(op, cls)]
    return out


def vocabulary() -> set[str]:
    """The words the grammar can use."""
    words: set[str] = set()
    for texts in all_single_edit_captions().values():
        for text in texts:
            words.update(_tokenize(text))
    for connective in CONNECTIVES:
        words.update(_tokenize(connective))
    return words - {","}


# --------------------------------------------------------------------------------------- parser

_TOKEN_RE = re.compile(r"[a-z]+|[,;.]")
# Words that end a clause.
_SEPARATORS = frozenset({"and", "then", "also", "plus", "while", "first", "finally", ",", ";", "."})

# Word sequences naming a class; the longest match wins ("car horn" is the horn, not the car).
_CLASS_PATTERNS: dict[tuple[str, ...], str] = {}
for _cls, _words in {
    "thunder": ("thunder", "thunderclap", "thunderclaps", "rumble", "rumbling", "thunderstorm"),
    "dog": ("dog", "dogs", "barking", "bark", "barks", "woof"),
    "birds": ("birds", "bird", "chirping", "chirp", "chirps", "birdsong", "tweeting", "singing"),
    "footsteps": ("footsteps", "footstep", "steps", "step", "walking", "walks"),
    "rain": ("rain", "shower", "downpour", "pouring", "raining", "drizzle"),
    "bells": ("bells", "bell", "chiming", "chime", "chimes", "church"),
    "horn": ("horn", "horns", "honking", "honk", "honks", "hooting"),
    "car": ("car", "cars", "passing", "driving", "vehicle", "drives"),
    "siren": ("siren", "sirens", "ambulance", "police", "wailing"),
    "knocking": ("knocking", "knock", "knocks", "knocked", "door"),
}.items():
    for _w in _words:
        _CLASS_PATTERNS[(_w,)] = _cls
_CLASS_PATTERNS[("car", "horn")] = "horn"
_CLASS_PATTERNS[("car", "horns")] = "horn"

# Word sequences signalling an operation.
_OP_PATTERNS: dict[tuple[str, ...], str] = {}
for _op, _words in {
    "add": ("add", "adding", "added", "insert", "include", "introduce"),
    "remove": ("remove", "removed", "delete", "eliminate", "rid", "mute", "erase"),
    "louder": ("louder", "increase", "raise", "boost", "amplify", "stronger", "up"),
    "quieter": (
        "quieter",
        "softer",
        "decrease",
        "lower",
        "reduce",
        "weaker",
        "down",
        "quieten",
        "quiet",
    ),
    "change": ("replace", "change", "swap", "substitute", "different", "another", "switch"),
    "earlier": ("earlier", "sooner"),
    "later": ("later", "delay", "postpone"),
}.items():
    for _w in _words:
        _OP_PATTERNS[(_w,)] = _op
_OP_PATTERNS[("take", "out")] = "remove"
_OP_PATTERNS[("cut", "out")] = "remove"
_MAX_PATTERN = 2


def _tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower())


def _match(tokens: list[str], patterns: dict[tuple[str, ...], str]) -> list[str]:
    """Labels of the patterns found in `tokens`, left to right, longest match first."""
    found: list[str] = []
    i = 0
    while i < len(tokens):
        for length in range(_MAX_PATTERN, 0, -1):
            label = patterns.get(tuple(tokens[i : i + length]))
            if label is not None:
                found.append(label)
                i += length
                break
        else:
            i += 1
    return found


def _clauses(tokens: list[str]) -> list[list[str]]:
    clauses: list[list[str]] = [[]]
    for token in tokens:
        if token in _SEPARATORS:
            clauses.append([])
        else:
            clauses[-1].append(token)
    return [c for c in clauses if c]


def _clause_op(ops: list[str]) -> str | None:
    """The operation of a clause: the first specific cue, else "change" if it was cued."""
    for op in ops:
        if op != "change":
            return op
    return ops[0] if ops else None


def parse_caption(text: str) -> frozenset[Edit]:
    """The set of (operation, event class) edits a caption asks for.

    The caption is split into clauses at "and", "then", "also" and punctuation. Each clause gives
    its classes and its operation. A clause with classes but no operation ("make the dog | the bells
    louder") takes the operation of the next clause that has one but no class of its own, or else of
    the nearest clause before it ("remove the dog | the bells"). Words that name nothing are
    ignored, so garbled text yields whatever edits it still states.
    """
    parsed = []
    for clause in _clauses(_tokenize(text)):
        classes = list(dict.fromkeys(_match(clause, _CLASS_PATTERNS)))
        op = _clause_op(_match(clause, _OP_PATTERNS))
        if classes or op:
            parsed.append((op, classes))

    edits: set[Edit] = set()
    pending: list[str] = []  # classes still waiting for an operation
    last_op: str | None = None
    for op, classes in parsed:
        if op is None:
            pending.extend(classes)
            continue
        if classes:
            edits.update((op, cls) for cls in pending + classes)
        elif pending:
            edits.update((op, cls) for cls in pending)
        pending = []
        last_op = op
    if pending and last_op is not None:
        edits.update((last_op, cls) for cls in pending)
    return frozenset(edits)
