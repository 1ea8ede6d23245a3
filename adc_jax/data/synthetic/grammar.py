"""Caption grammar of the synthetic_adc dataset and the parser that reads captions back into edits.

A caption turns clip 1 into clip 2 with one or two lower-case imperative edits, in the style of
AudioDiffCaps ("make the thunder quieter", "add the sound of a dog barking", "remove the birds and
make the horn louder"). An edit is an (operation, event class) pair.

`make_captions` writes several different references for the same edits by drawing a template per
operation, a phrase per class, the order of the edits and the connective between them.
A pair without a difference is described by phrases such as "there is no difference" and
"nothing has changed" (NO_DIFFERENCE_CAPTIONS), which name no edit.
`parse_caption` inverts the grammar: it returns the set of edits a caption asks for. It reads every
reference the grammar produces exactly (the tests check all of them) and is lenient on model
outputs: it keys on single words ("louder", "dog", "delay") inside clauses split at "and", "then"
and commas, so partial or garbled text still gives its best-effort set of edits.

Classes beyond the synthetic EVENT_CLASSES (the clip_pairs dataset's labels, e.g. "crying_baby")
are phrased from their words (`label_phrases`: "the crying baby" / "a crying baby"); the parser
reads them when told which ones a run uses (`parse_caption(text, classes)`), and
`check_phrasing(classes)` says whether every caption of a set of classes reads back exactly.

Public API:
  make_captions(edits, rng, num)        reference captions of (operation, class) edits (no edit:
                                        "no difference" references, NO_DIFFERENCE_CAPTIONS).
  parse_caption(text, classes=())       the edits a caption asks for.
  says_no_difference(text)              whether a text says nothing changed (NO_DIFFERENCE_CUES).
  reads_no_difference(text, classes=()) ... and asks for no edit: a "no difference" answer.
  inverse_edits(edits)                  the edits that undo them (the swapped pair's edits).
  label_class(label)                    a data label as a class name ("Car horn" -> "car_horn").
  label_words(cls), label_phrases(cls)  a class's words and (definite, indefinite) phrases.
  is_class_name(cls)                    a synthetic class or a label class name.
  check_phrasing(classes)               raises if a caption of these classes reads back wrong.
  all_single_edit_captions(classes), vocabulary()   every single-edit caption, the grammar's words.
"""

from __future__ import annotations

import collections
import functools
import re
from collections.abc import Iterable, Sequence

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
# References of a pair without an edit (clip 2 is clip 1 re-rendered, `scenes.plan_pair`); each
# holds a NO_DIFFERENCE_CUES phrase and names no edit.
NO_DIFFERENCE_CAPTIONS = (
    "there is no difference",
    "there is no difference between the two sounds",
    "no change",
    "nothing has changed",
    "nothing is different",
    "the two clips are identical",
    "both sounds are the same",
    "the two recordings sound the same",
    "leave it as it is",
    "keep everything the same",
)
# Word sequences that say "nothing changed" (`says_no_difference`): the grammar's phrases and
# the usual ways free text says it ("the clips are indistinguishable", "it is unchanged").
NO_DIFFERENCE_CUES = (
    ("no", "difference"),
    ("no", "differences"),
    ("no", "change"),
    ("no", "changes"),
    ("nothing", "changed"),
    ("nothing", "has", "changed"),
    ("nothing", "is", "different"),
    ("identical",),
    ("indistinguishable",),
    ("unchanged",),
    ("are", "the", "same"),
    ("sound", "the", "same"),
    ("sounds", "the", "same"),
    ("as", "it", "is"),
    ("everything", "the", "same"),
)


def _fill(template: str, phrase: str) -> str:
    return template.replace("{a}", phrase).replace("{the}", phrase)


def _phrases(op: str, cls: str) -> tuple[str, ...]:
    if cls in DEFINITE:
        return INDEFINITE[cls] if op == "add" else DEFINITE[cls]
    definite, indefinite = label_phrases(cls)
    return indefinite if op == "add" else definite


# ------------------------------------------------------------------ classes named by data labels

# A class name made from a label: lower-case letters and digits, words joined by "_".
_LABEL_CLASS_RE = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")
# Last words that take no indefinite article ("add pouring water", "add crackling fire").
_MASS_NOUNS = frozenset(
    "applause fire gravel hail laughter music noise rain smoke snow speech static steam surf "
    "thunder traffic water wind".split()
)
_IRREGULAR_PLURALS = frozenset("children feet fish geese men mice people sheep teeth women".split())


def label_class(label: str) -> str:
    """The class name of a data label in captions and edit labels: its words joined by "_".

    Case and separators do not matter ("Car horn", "car_horn" and "CAR-HORN" give "car_horn");
    parenthesised parts are dropped and a label listing alternatives keeps the first
    ("Fill_(with_liquid)" -> "fill", "Crumpling_and_crinkling" -> "crumpling"). Words the parser
    reads as clause boundaries are dropped. "" if no word is left.
    """
    text = re.sub(r"\([^)]*\)", " ", label.lower())
    words = re.findall(r"[a-z0-9]+", text)
    if "and" in words:
        words = words[: words.index("and")]
    return "_".join(w for w in words if w not in _SEPARATORS)


def label_words(cls: str) -> tuple[str, ...]:
    """The words naming a class in captions: "church_bells" -> ("church", "bells").

    Only letters count (the parser reads words of letters): "hi_hat" -> ("hi", "hat").
    """
    return tuple(re.findall(r"[a-z]+", label_class(cls)))


def is_class_name(cls: str) -> bool:
    """A synthetic class, or a label class name as `label_class` writes it (with a letter)."""
    if cls in DEFINITE:
        return True
    return (
        bool(_LABEL_CLASS_RE.fullmatch(cls)) and label_class(cls) == cls and bool(label_words(cls))
    )


def label_phrases(cls: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(definite, indefinite) noun phrases of a class, as the templates' {the} and {a} slots use.

    The synthetic classes keep their own phrases (DEFINITE, INDEFINITE); any other class is
    phrased from its words: "crying_baby" -> ("the crying baby",), ("a crying baby",); plurals,
    "-ing" words and mass nouns take no article ("sea_waves" -> "sea waves", "snoring").
    """
    if cls in DEFINITE:
        return DEFINITE[cls], INDEFINITE[cls]
    words = label_words(cls)
    if not words:
        raise ValueError(f"Class {cls!r} has no words to name it in a caption.")
    phrase = " ".join(words)
    last = words[-1]
    bare = (
        last in _MASS_NOUNS
        or last in _IRREGULAR_PLURALS
        or last.endswith("ing")
        or (last.endswith("s") and not last.endswith("ss"))
    )
    article = "" if bare else ("an " if phrase[0] in "aeiou" else "a ")
    return (f"the {phrase}",), (f"{article}{phrase}",)


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
      edits: (operation, event class) pairs, each class at most once; none for a pair without a
        difference, which gets `num` of the NO_DIFFERENCE_CAPTIONS.
      rng: the random generator of the pair (the result is a function of its state).
      num: number of references; they are all distinct.
    """
    if not edits:
        if not 0 < num <= len(NO_DIFFERENCE_CAPTIONS):
            raise ValueError(
                f"num={num}: there are {len(NO_DIFFERENCE_CAPTIONS)} no-difference references."
            )
        order = rng.permutation(len(NO_DIFFERENCE_CAPTIONS))[:num]
        return [NO_DIFFERENCE_CAPTIONS[i] for i in order]
    for op, cls in edits:
        if op not in OPERATIONS or not is_class_name(cls):
            raise ValueError(
                f"Unknown edit {(op, cls)!r}: operations are {OPERATIONS}, classes {EVENT_CLASSES} "
                "or label class names (lower-case words joined by '_', see `label_class`)."
            )
    captions: list[str] = []
    for _ in range(100 * num):
        caption = _random_caption(edits, rng)
        if caption not in captions:
            captions.append(caption)
            if len(captions) == num:
                return captions
    raise RuntimeError(f"Could not phrase {edits!r} in {num} different ways.")


def all_single_edit_captions(classes: Iterable[str] = EVENT_CLASSES) -> dict[Edit, list[str]]:
    """Every caption the grammar can write for a single edit of these classes (default: the
    synthetic ones), for tests, vocabulary counts and `check_phrasing`."""
    out: dict[Edit, list[str]] = {}
    for op in OPERATIONS:
        for cls in classes:
            out[(op, cls)] = [_fill(t, p) for t in TEMPLATES[op] for p in _phrases(op, cls)]
    return out


def vocabulary() -> set[str]:
    """The words the grammar can use."""
    words: set[str] = set()
    for texts in all_single_edit_captions().values():
        for text in texts:
            words.update(_tokenize(text))
    for text in (*CONNECTIVES, *NO_DIFFERENCE_CAPTIONS):
        words.update(_tokenize(text))
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


# Words of the templates and the operation cues: a class named by a label is never read from one
# of these alone (its full phrase still is).
_TEMPLATE_WORDS = frozenset(
    {w for texts in TEMPLATES.values() for t in texts for w in _TOKEN_RE.findall(t)}
    | {w for pattern in _OP_PATTERNS for w in pattern}
    | {w for text in NO_DIFFERENCE_CAPTIONS for w in _TOKEN_RE.findall(text)}
    | {w for cue in NO_DIFFERENCE_CUES for w in cue}
    | {"a", "an", "the"}
)


@functools.lru_cache(maxsize=32)
def _class_patterns(extra: frozenset[str]) -> tuple[dict[tuple[str, ...], str], int]:
    """The class patterns with the label classes `extra` added, and the longest pattern's length.

    A label class is read from its full phrase ("crying baby"), which wins over the synthetic
    classes' single words, and from each of its words that no other class of the run and no
    template uses ("baby").
    """
    if not extra:
        return _CLASS_PATTERNS, _MAX_PATTERN
    patterns = dict(_CLASS_PATTERNS)
    counts = collections.Counter(w for cls in extra for w in set(label_words(cls)))
    for cls in sorted(extra):
        for w in label_words(cls):
            if counts[w] == 1 and (w,) not in _CLASS_PATTERNS and w not in _TEMPLATE_WORDS:
                patterns[(w,)] = cls
    for cls in sorted(extra):
        patterns[label_words(cls)] = cls
    return patterns, max(len(p) for p in patterns)


def _match(
    tokens: list[str], patterns: dict[tuple[str, ...], str], max_pattern: int = _MAX_PATTERN
) -> list[str]:
    """Labels of the patterns found in `tokens`, left to right, longest match first."""
    found: list[str] = []
    i = 0
    while i < len(tokens):
        for length in range(max_pattern, 0, -1):
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


def parse_caption(text: str, classes: Iterable[str] = ()) -> frozenset[Edit]:
    """The set of (operation, event class) edits a caption asks for.

    The caption is split into clauses at "and", "then", "also" and punctuation. Each clause gives
    its classes and its operation. A clause with classes but no operation ("make the dog | the bells
    louder") takes the operation of the next clause that has one but no class of its own, or else of
    the nearest clause before it ("remove the dog | the bells"). Words that name nothing are
    ignored, so garbled text yields whatever edits it still states.

    Args:
      text: the caption.
      classes: the classes of the run beyond EVENT_CLASSES (label classes such as "crying_baby",
        whose phrases `label_phrases` makes); the synthetic classes are always read.
    """
    extra = frozenset(c for c in classes if c not in DEFINITE)
    for cls in extra:
        if not is_class_name(cls):
            raise ValueError(f"{cls!r} is not a class name (see `label_class`).")
    class_patterns, max_pattern = _class_patterns(extra)
    parsed = []
    for clause in _clauses(_tokenize(text)):
        classes_found = list(dict.fromkeys(_match(clause, class_patterns, max_pattern)))
        op = _clause_op(_match(clause, _OP_PATTERNS))
        if classes_found or op:
            parsed.append((op, classes_found))

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


_NO_DIFFERENCE_MAX = max(len(cue) for cue in NO_DIFFERENCE_CUES)


def says_no_difference(text: str) -> bool:
    """Whether a text holds a phrase saying nothing changed (one of NO_DIFFERENCE_CUES, as whole
    words: "There is no difference.", "The two clips are identical"), whatever else it says."""
    cues = dict.fromkeys(NO_DIFFERENCE_CUES, "none")
    return bool(_match(_tokenize(text), cues, _NO_DIFFERENCE_MAX))


def reads_no_difference(text: str, classes: Iterable[str] = ()) -> bool:
    """Whether a caption answers "no difference": it says so (`says_no_difference`) and asks for
    no edit (`parse_caption` finds none). "no change" does; "no change, but add a dog" does not."""
    return says_no_difference(text) and not parse_caption(text, classes)


# The operation that undoes each operation (what the swapped pair's caption asks for).
INVERSE_OPERATION = {
    "add": "remove",
    "remove": "add",
    "louder": "quieter",
    "quieter": "louder",
    "earlier": "later",
    "later": "earlier",
    "change": "change",
}


def inverse_edits(edits: Iterable[Edit]) -> frozenset[Edit]:
    """The edits that turn clip 2 back into clip 1: add <-> remove, louder <-> quieter,
    earlier <-> later, change stays change (the empty set stays empty)."""
    return frozenset((INVERSE_OPERATION[op], cls) for op, cls in edits)


def check_phrasing(classes: Iterable[str]) -> None:
    """Raises ValueError unless every single-edit caption of `classes` reads back as its edit.

    Run before making data with label classes: a label whose words collide with the grammar or
    with another class ("passing car" next to the synthetic "car") would make difference
    accuracy wrong. The message names the class, the caption and what it read back as.
    """
    classes = tuple(dict.fromkeys(classes))
    for cls in classes:
        if not is_class_name(cls):
            raise ValueError(
                f"{cls!r} is not a class name: use `label_class(label)` (lower-case words joined "
                "by '_' with at least one letter)."
            )
    for text in NO_DIFFERENCE_CAPTIONS:
        got = parse_caption(text, classes)
        if got:
            raise ValueError(
                f"The no-difference caption {text!r} reads back as {sorted(got)} with the classes "
                f"{list(classes)}. Rename the class whose words it holds."
            )
    for edit, texts in all_single_edit_captions(classes).items():
        for text in texts:
            got = parse_caption(text, classes)
            if got != {edit}:
                raise ValueError(
                    f"Class {edit[1]!r} cannot be told apart in captions: {text!r} reads back as "
                    f"{sorted(got)} instead of {[edit]}. Rename the class (its label's words "
                    "collide with the caption grammar or with another class of the run)."
                )
