"""Caption metrics of the paper (BLEU-1..4, METEOR, ROUGE-L, CIDEr, SPICE, SPIDEr), pycocoevalcap.

`score_captions` follows the COCO caption evaluation: every caption goes through the Stanford
PTB tokenizer (lower case, punctuation removed), then each scorer sees the tokenised text. Corpus
scores are returned as plain Python floats, so the result can be written with `json.dump`.

Edge cases, handled explicitly instead of letting a Java scorer choke on them:
  * A prediction that is empty after tokenisation is scored as the single token
    `EMPTY_PREDICTION` ("emptyprediction"): a word no reference contains, so the pair scores
    (near) zero on every metric while the corpus scores stay defined. "Empty" means no letter or
    digit is left: the tokenizer removes single marks ("...", "!"), and what it keeps of a
    punctuation-only caption ("?!", "!!") counts as empty too. Their number is reported in
    `result["num_empty_predictions"]`.
  * A reference that is empty by the same rule is dropped; a pair left without any reference
    gets the single reference `EMPTY_REFERENCE` ("emptyreference"), which no prediction matches.
    The number of such pairs is `result["num_empty_references"]`.
  * CIDEr's idf comes from the evaluated set itself: with a single pair every n-gram has idf 0
    and CIDEr is 0 whatever the prediction. Score whole splits.

SPICE needs Stanford CoreNLP 3.6.0 (about 400 MB), which pycocoevalcap downloads on first use.
adc_jax never triggers that download: SPICE (and SPIDEr = mean of CIDEr and SPICE) is computed
only when both jars are already in pycocoevalcap's `spice/lib` folder (`tools/get_spice_models.sh`
puts them there); otherwise both are None and `result["notes"]["SPICE"]` says why. SPICE runs
Java directly (not through pycocoevalcap's wrapper) so that its input, output and parse cache go
to a temporary folder instead of the package folder. SPICE 1.0 predates the Java module system:
its parse cache (FST serialisation) fails on Java >= 17 without `--add-opens`, so those options
are passed through JDK_JAVA_OPTIONS (read by Java >= 9 only), and a failed run is retried once
without the cache (the cache only saves time). If Java still fails, SPICE is None with the error
in the notes; scoring never crashes because of SPICE.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import json
import math
import os
import shutil
import subprocess
import tempfile
from typing import Any

import numpy as np
from absl import logging
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

# Token that stands in for a prediction that is empty after tokenisation.
EMPTY_PREDICTION = "emptyprediction"
# Token that stands in for the references of a pair whose references are all empty.
EMPTY_REFERENCE = "emptyreference"
CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
SPICE_JAR = "spice-1.0.jar"
# Heap of the SPICE JVM (pycocoevalcap's value: CoreNLP's parser needs several GB).
SPICE_JAVA_HEAP = "-Xmx8G"
# Java >= 9 options that let SPICE's FST-based cache reflect into java.base (see module doc).
_ADD_OPENS = " ".join(
    f"--add-opens=java.base/{p}=ALL-UNNAMED"
    for p in (
        "java.lang",
        "java.lang.reflect",
        "java.util",
        "java.util.concurrent",
        "java.math",
        "java.io",
        "java.net",
        "java.text",
        "java.nio",
        "sun.nio.ch",
    )
)
# The metrics every result holds as floats, in table order (SPICE/SPIDEr may be None).
METRIC_KEYS = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr")


def _spice_dir() -> str:
    """pycocoevalcap's spice folder (holds spice-1.0.jar and lib/); found without importing it."""
    spec = importlib.util.find_spec("pycocoevalcap.spice")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pycocoevalcap is not installed: pip install pycocoevalcap")
    return list(spec.submodule_search_locations)[0]


def spice_status() -> tuple[bool, str]:
    """Whether SPICE can run here, and why not (or where it runs from)."""
    try:
        spice_dir = _spice_dir()
    except ImportError as e:
        return False, str(e)
    lib = os.path.join(spice_dir, "lib")
    missing = [j for j in CORENLP_JARS if not os.path.isfile(os.path.join(lib, j))]
    if missing:
        return False, (
            f"Stanford CoreNLP 3.6.0 jars not installed ({', '.join(missing)} missing "
            f"in {lib}); run tools/get_spice_models.sh"
        )
    if not os.path.isfile(os.path.join(spice_dir, SPICE_JAR)):
        return False, f"{SPICE_JAR} not found in {spice_dir}; reinstall pycocoevalcap"
    if shutil.which("java") is None:
        return False, "java not found on PATH; install a Java runtime (8 or newer)"
    return True, f"SPICE available ({spice_dir})"


def _check_inputs(predictions: dict[str, str], references: dict[str, list[str]]) -> list[Any]:
    if not isinstance(predictions, dict) or not isinstance(references, dict):
        raise TypeError("predictions and references must be dicts keyed by pair id.")
    pred_keys, ref_keys = set(predictions), set(references)
    if pred_keys != ref_keys:
        only_p = sorted(map(str, pred_keys - ref_keys))[:5]
        only_r = sorted(map(str, ref_keys - pred_keys))[:5]
        raise ValueError(
            f"Keys of predictions and references differ: {len(pred_keys - ref_keys)} "
            f"only in predictions (e.g. {only_p}), {len(ref_keys - pred_keys)} only in "
            f"references (e.g. {only_r}). Score the same set of pairs."
        )
    if not predictions:
        raise ValueError("No pairs to score: predictions and references are empty.")
    keys = list(predictions)
    for k in keys:
        if not isinstance(predictions[k], str):
            raise TypeError(
                f"Prediction of {k!r} must be a str, got {type(predictions[k]).__name__}."
            )
        refs = references[k]
        if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"References of {k!r} must be a non-empty list of str, got {refs!r}.")
    return keys


def _has_word(text: str) -> bool:
    """False for text with no letter or digit ('', '?!', '!!' survive PTB punctuation removal)."""
    return any(ch.isalnum() for ch in text)


def tokenize_for_scoring(
    predictions: list[str], references: list[list[str]]
) -> tuple[list[str], list[list[str]], int, int]:
    """PTB-tokenises all captions in one JVM call and substitutes the empty-caption placeholders.

    Returns (predictions, references, number of empty predictions, number of pairs without a
    reference), tokenised exactly as `score_captions` scores them.
    """

    # Empty lines are replaced before tokenisation too, so the tokenizer's line alignment never
    # depends on how it treats blank lines.
    def prep(s: str) -> dict[str, str]:
        return {"caption": " ".join(s.split()) or "."}

    captions = {("p", i): [prep(p)] for i, p in enumerate(predictions)}
    captions.update({("r", i): [prep(r) for r in refs] for i, refs in enumerate(references)})
    tokens = PTBTokenizer().tokenize(captions)
    if set(tokens) != set(captions) or any(len(tokens[k]) != len(v) for k, v in captions.items()):
        raise RuntimeError(
            "The PTB tokenizer returned a different number of captions than it was "
            "given; check that Java runs (java -version)."
        )
    n_empty_pred = n_empty_ref = 0
    out_pred, out_refs = [], []
    for i in range(len(predictions)):
        p = tokens[("p", i)][0].strip()
        if not _has_word(p):
            p, n_empty_pred = EMPTY_PREDICTION, n_empty_pred + 1
        out_pred.append(p)
        refs = [r.strip() for r in tokens[("r", i)] if _has_word(r)]
        if not refs:
            refs, n_empty_ref = [EMPTY_REFERENCE], n_empty_ref + 1
        out_refs.append(refs)
    return out_pred, out_refs, n_empty_pred, n_empty_ref


# The METEOR scorer of this process: its JVM takes seconds to start, so one is kept for every
# scoring call (pycocoevalcap's Meteor serves any number of compute_score calls, one at a time
# under its lock) and replaced when its process has died.
_METEOR: Meteor | None = None


def _meteor_scorer() -> Meteor:
    global _METEOR
    if _METEOR is None or _METEOR.meteor_p.poll() is not None:
        try:
            _METEOR = Meteor()
        except FileNotFoundError as e:
            raise RuntimeError(
                "METEOR needs Java on PATH (java -version); install a Java runtime."
            ) from e
    return _METEOR


def _meteor(gts: dict[int, list[str]], res: dict[int, list[str]]) -> tuple[float, list[float]]:
    """Corpus METEOR and the per-pair scores."""
    global _METEOR
    meteor = _meteor_scorer()
    try:
        score, segments = meteor.compute_score(gts, res)
    except (ValueError, BrokenPipeError) as e:  # The JVM died: readline() returned ''.
        err = (
            meteor.meteor_p.stderr.read1(4000).decode(errors="replace")
            if meteor.meteor_p.stderr
            else ""
        )
        _METEOR = None  # the next call starts a new JVM
        if meteor.lock.locked():
            meteor.lock.release()  # compute_score does not release it when it fails
        raise RuntimeError(f"METEOR's Java process failed: {err.strip() or e}") from e
    return float(score), [float(x) for x in segments]


def _run_spice(
    gts: dict[int, list[str]], res: dict[int, list[str]]
) -> tuple[float | None, str, list[float] | None]:
    """Runs SPICE 1.0 in a temporary folder; returns (score, note, per-pair scores) and never
    raises."""
    spice_dir = _spice_dir()
    env = dict(os.environ)
    env["JDK_JAVA_OPTIONS"] = (env.get("JDK_JAVA_OPTIONS", "") + " " + _ADD_OPENS).strip()
    cache_dir = os.environ.get(
        "ADC_JAX_SPICE_CACHE", os.path.join(tempfile.gettempdir(), "adc_jax_spice_cache")
    )
    with tempfile.TemporaryDirectory(prefix="adc_jax_spice_") as tmp:
        in_file, out_file = os.path.join(tmp, "input.json"), os.path.join(tmp, "output.json")
        with open(in_file, "w") as f:
            json.dump([{"image_id": i, "test": res[i][0], "refs": gts[i]} for i in gts], f)
        errors = []
        for cache in (["-cache", cache_dir], []):
            if cache:
                os.makedirs(cache_dir, exist_ok=True)
            cmd = [
                "java",
                "-jar",
                SPICE_JAVA_HEAP,
                os.path.join(spice_dir, SPICE_JAR),
                in_file,
                *cache,
                "-out",
                out_file,
                "-subset",
                "-silent",
            ]
            try:
                proc = subprocess.run(cmd, cwd=spice_dir, env=env, capture_output=True, text=True)
            except OSError as e:
                return None, f"SPICE failed to start Java: {e}", None
            if proc.returncode == 0:
                break
            lines = (proc.stderr or proc.stdout or "").strip().splitlines()
            tail = "\n".join(ln for ln in lines if not ln.startswith("NOTE: Picked up"))[-600:]
            errors.append(f"{'with' if cache else 'without'} cache: exit {proc.returncode}: {tail}")
        else:
            return None, "SPICE failed (Java error); " + " | ".join(errors), None
        try:
            with open(out_file) as f:
                results = json.load(f)
            values = [float(item["scores"]["All"]["f"]) for item in results]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return None, f"SPICE output could not be read: {e}", None
    if len(values) != len(gts):
        return None, f"SPICE scored {len(values)} pairs instead of {len(gts)}", None
    score = sum(values) / len(values)
    if not math.isfinite(score):
        return None, "SPICE returned a non-finite score (a caption could not be parsed)", None
    note = "computed with Stanford CoreNLP 3.6.0" + (" (without cache)" if errors else "")
    return score, note, values


@dataclasses.dataclass
class PairScores:
    """Per-pair quantities of a scored set, from which the corpus scores of any resample of its
    pairs follow (`adc_jax.metrics.bootstrap`), in the order of the scored keys.

    bleu_correct / bleu_guess: [P, 4] clipped n-gram matches and candidate n-grams (n = 1..4);
    bleu_testlen / bleu_reflen: [P] candidate length and closest reference length (as
    pycocoevalcap's BLEU counts them); meteor, rouge_l, cider, spice: [P] per-pair scores (CIDEr
    with the idf of the whole scored set; spice None when not computed).
    """

    keys: list[str]
    bleu_correct: np.ndarray
    bleu_guess: np.ndarray
    bleu_testlen: np.ndarray
    bleu_reflen: np.ndarray
    meteor: np.ndarray
    rouge_l: np.ndarray
    cider: np.ndarray
    spice: np.ndarray | None


def _bleu_counts(pred: str, refs: list[str], n: int = 4) -> tuple[list[int], list[int], int, int]:
    """(correct [n], guess [n], test length, closest reference length) of one tokenised pair,
    counted as pycocoevalcap's BLEU does (whitespace tokens, max reference counts, the reference
    length closest to the candidate's, the shorter one on a tie)."""

    def ngrams(words: list[str]) -> collections.Counter:
        return collections.Counter(
            tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1)
        )

    test = pred.split()
    max_ref: dict[tuple[str, ...], int] = {}
    ref_lens = []
    for ref in refs:
        words = ref.split()
        ref_lens.append(len(words))
        for gram, count in ngrams(words).items():
            max_ref[gram] = max(max_ref.get(gram, 0), count)
    correct = [0] * n
    for gram, count in ngrams(test).items():
        correct[len(gram) - 1] += min(max_ref.get(gram, 0), count)
    guess = [max(0, len(test) - k + 1) for k in range(1, n + 1)]
    reflen = min((abs(length - len(test)), length) for length in ref_lens)[1]
    return correct, guess, len(test), reflen


def score_captions_per_pair(
    predictions: dict[str, str], references: dict[str, list[str]], *, spice: bool | str = "auto"
) -> tuple[dict, PairScores]:
    """`score_captions`, and the per-pair quantities behind its corpus scores (`PairScores`)."""
    if spice not in (True, False, "auto"):
        raise ValueError(f"spice must be True, False or 'auto', got {spice!r}.")
    keys = _check_inputs(predictions, references)
    if spice is not False:
        available, reason = spice_status()
        if spice is True and not available:
            raise RuntimeError(f"SPICE was requested but cannot run: {reason}.")
    else:
        available, reason = False, "SPICE disabled (spice=False)"

    preds, refs, n_empty_pred, n_empty_ref = tokenize_for_scoring(
        [predictions[k] for k in keys], [list(references[k]) for k in keys]
    )
    res = {i: [p] for i, p in enumerate(preds)}
    gts = dict(enumerate(refs))
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"BLEU_{n + 1}": float(b) for n, b in enumerate(bleu)}
    scores["METEOR"], meteor_segments = _meteor(gts, res)
    rouge, rouge_pairs = Rouge().compute_score(gts, res)
    scores["ROUGE_L"] = float(rouge)
    cider, cider_pairs = Cider().compute_score(gts, res)
    scores["CIDEr"] = float(cider)
    spice_score, spice_pairs = None, None
    if available:
        spice_score, reason, spice_pairs = _run_spice(gts, res)
        if spice_score is None:
            logging.warning("SPICE not reported: %s", reason)
    assert tuple(scores) == METRIC_KEYS
    scores["SPICE"] = spice_score
    scores["SPIDEr"] = None if spice_score is None else (scores["CIDEr"] + spice_score) / 2
    scores["num_pairs"] = len(keys)
    scores["num_empty_predictions"] = n_empty_pred
    scores["num_empty_references"] = n_empty_ref
    scores["notes"] = {"SPICE": reason}
    counts = [_bleu_counts(p, r) for p, r in zip(preds, refs, strict=True)]
    pairs = PairScores(
        keys=list(keys),
        bleu_correct=np.asarray([c[0] for c in counts], np.float64),
        bleu_guess=np.asarray([c[1] for c in counts], np.float64),
        bleu_testlen=np.asarray([c[2] for c in counts], np.float64),
        bleu_reflen=np.asarray([c[3] for c in counts], np.float64),
        meteor=np.asarray(meteor_segments, np.float64),
        rouge_l=np.asarray(rouge_pairs, np.float64),
        cider=np.asarray(cider_pairs, np.float64),
        spice=None if spice_pairs is None else np.asarray(spice_pairs, np.float64),
    )
    return scores, pairs


def score_captions(
    predictions: dict[str, str], references: dict[str, list[str]], *, spice: bool | str = "auto"
) -> dict:
    """Corpus-level caption metrics of `predictions` against `references`.

    Args:
      predictions: pair id -> predicted caption.
      references: pair id -> list of reference captions (>= 1); same ids as `predictions`.
      spice: "auto" computes SPICE/SPIDEr when the CoreNLP jars are installed and reports None
        otherwise; False never computes them; True raises RuntimeError when SPICE is not
        installed. A Java failure while running SPICE gives None with the reason in every mode.

    Returns:
      {"BLEU_1".."BLEU_4", "METEOR", "ROUGE_L", "CIDEr": float, "SPICE", "SPIDEr": float | None,
       "num_pairs", "num_empty_predictions", "num_empty_references": int,
       "notes": {"SPICE": str}}; all values are JSON-serialisable.

    Raises:
      ValueError: the keys differ, there are no pairs, or a pair has no reference list.
      RuntimeError: Java is missing or a Java scorer (tokenizer, METEOR) fails.
    """
    return score_captions_per_pair(predictions, references, spice=spice)[0]


__all__ = [
    "EMPTY_PREDICTION",
    "EMPTY_REFERENCE",
    "METRIC_KEYS",
    "PairScores",
    "score_captions",
    "score_captions_per_pair",
    "spice_status",
    "tokenize_for_scoring",
]
