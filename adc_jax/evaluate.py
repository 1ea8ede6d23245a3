"""Decode a split and score it: pycocoevalcap metrics, difference accuracy and a trivial baseline.

Used during training (`train.py` writes `workdir/eval/step_<N>.json`) and as a command line that
scores any checkpoint of a workdir with the config saved beside it:

  python -m adc_jax.evaluate --workdir=DIR [--split=eval] [--decode=greedy|beam] [--beam_size=4]
                             [--checkpoint_step=N] [--max_examples=N]

(`evaluate_workdir(...)` is the same from Python). It writes `DIR/eval/<split>_<step>_<decode>.json`, a Markdown table `<...>.md` and sample
predictions beside their references `<...>_samples.txt`. Every table has a row for the
most-frequent-caption baseline (the most frequent training caption predicted for every pair), so
it shows what "learned nothing" scores.

Breakdowns (`result["breakdown"]`, also tables in the Markdown), model beside the baseline:
  by_operation  synthetic data: for each edit operation (add, remove, louder, quieter, change,
                earlier, later), the pairs whose labelled edits contain it: their BLEU-4, CIDEr
                and exact-set accuracy, and the operation's edit precision/recall/F1 over the
                whole split (from difference accuracy). None on unlabelled data.
  by_keyword    any data (meant for AudioDiffCaps, which has no labels): the pairs whose
                references use one of a group's words (`KEYWORD_GROUPS`: "louder", "increase",
                ... for louder), the same caption scores.
  by_scene      the pairs of each background scene (rain, traffic).
A pair can be in several groups (two edits, or references worded differently). Subset BLEU-4 is
the corpus BLEU-4 of the subset; subset CIDEr is the mean per-pair CIDEr computed with the idf of
the whole split, so the mean over a partition equals the split's CIDEr (CIDEr of a subset alone
would use the subset's own idf and be 0 for a single pair).

SPICE and SPIDEr are null when Stanford CoreNLP is not installed (detected from its two jars in
pycocoevalcap's spice/lib, see `adc_jax.metrics.captioning.spice_status`); `scores.notes.SPICE`
gives the reason and `tools/get_spice_models.sh` installs it. A workdir without config.json,
vocab.json or a checkpoint is a one-line error naming it (exit status 1).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from adc_jax import sharding as sharding_lib
from adc_jax.data import pipeline
from adc_jax.data.tokenizer import Vocabulary

SCORE_COLUMNS = ("BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE", "SPIDEr")
# Scores computed on every subset of a breakdown.
SUBSET_SCORES = ("BLEU_4", "CIDEr")
# Words (or two-word phrases) of the references that put a pair into a keyword group. Written for
# AudioDiffCaps' free-form captions ("a dog barking is added", "the rain becomes louder") and the
# synthetic grammar; ambiguous words ("up", "before", "start") are left out on purpose.
KEYWORD_GROUPS: dict[str, tuple[str, ...]] = {
    "add": (
        "add",
        "adds",
        "added",
        "adding",
        "appear",
        "appears",
        "appeared",
        "insert",
        "inserted",
        "include",
        "included",
        "introduce",
        "introduced",
    ),
    "remove": (
        "remove",
        "removes",
        "removed",
        "removing",
        "disappear",
        "disappears",
        "disappeared",
        "delete",
        "deleted",
        "eliminate",
        "eliminated",
        "gone",
        "vanish",
        "vanishes",
        "vanished",
        "rid",
        "take out",
    ),
    "louder": (
        "louder",
        "increase",
        "increases",
        "increased",
        "raise",
        "raised",
        "boost",
        "boosted",
        "amplify",
        "amplified",
        "stronger",
        "turn up",
    ),
    "quieter": (
        "quieter",
        "softer",
        "decrease",
        "decreases",
        "decreased",
        "lower",
        "lowered",
        "reduce",
        "reduced",
        "weaker",
        "fainter",
        "turn down",
    ),
    "change": (
        "change",
        "changes",
        "changed",
        "replace",
        "replaced",
        "different",
        "swap",
        "swapped",
        "substitute",
        "substituted",
    ),
    "earlier": ("earlier", "sooner"),
    "later": ("later", "delay", "delayed"),
}


def decode_split(
    decode_fn,
    rng_state,
    state,
    split: pipeline.EvalSplit,
    config: ml_collections.ConfigDict,
    mesh,
    vocab: Vocabulary,
    *,
    batch_size: int,
    nbest: int = 1,
) -> dict[str, list[tuple[str, float]]]:
    """Captions every pair of `split`: key -> n-best [(caption, score)], best first."""
    results: dict[str, list[tuple[str, float]]] = {}
    for batch in pipeline.eval_batches(
        split,
        config,
        batch_size=batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    ):
        valid, index = batch.pop("valid"), batch.pop("index")
        tokens, scores = decode_fn(rng_state, state, sharding_lib.global_batch(batch, mesh))
        tokens = np.asarray(multihost_utils.process_allgather(tokens, tiled=True))
        scores = np.asarray(multihost_utils.process_allgather(scores, tiled=True))
        valid = np.asarray(multihost_utils.process_allgather(valid, tiled=True))
        index = np.asarray(multihost_utils.process_allgather(index, tiled=True))
        for row in np.flatnonzero(valid):
            key = split.keys[int(index[row])]
            results[key] = [
                (vocab.decode(tokens[row, k]), float(scores[row, k]))
                for k in range(min(nbest, tokens.shape[1]))
            ]
    return results


def has_edit_labels(split: pipeline.EvalSplit) -> bool:
    return any(split.edits)


def score_predictions(predictions: dict[str, str], split: pipeline.EvalSplit) -> dict[str, Any]:
    """Caption metrics plus, on labelled (synthetic) data, difference accuracy."""
    from adc_jax.metrics.captioning import score_captions

    references = dict(zip(split.keys, split.references, strict=True))
    out: dict[str, Any] = {"scores": score_captions(predictions, references)}
    if has_edit_labels(split):
        from adc_jax.metrics.difference import difference_accuracy

        labels = dict(zip(split.keys, split.edits, strict=True))
        out["difference_accuracy"] = difference_accuracy(predictions, labels)
    else:
        out["difference_accuracy"] = None
    return out


def baseline_result(
    split: pipeline.EvalSplit, baseline_caption: str, cache_path: str | None
) -> dict[str, Any]:
    """Scores of the most-frequent-caption baseline on the split (cached in `cache_path`)."""
    if cache_path and os.path.exists(cache_path):
        with open(cache_path) as f:
            cached = json.load(f)
        if cached.get("caption") == baseline_caption and cached.get("keys") == len(split.keys):
            return cached["result"]
    result = score_predictions({k: baseline_caption for k in split.keys}, split)
    result["caption"] = baseline_caption
    if cache_path and jax.process_index() == 0:
        _write_json(
            cache_path, {"caption": baseline_caption, "keys": len(split.keys), "result": result}
        )
    return result


# ------------------------------------------------------------------------------------ breakdowns


def _words(text: str) -> str:
    """Lower-cased words joined by single spaces, padded with spaces for phrase matching."""
    from adc_jax.data.tokenizer import words

    return " " + " ".join(words(text)) + " "


def keyword_groups(references: list[list[str]]) -> dict[str, list[int]]:
    """Indices of the pairs whose references use a word of each `KEYWORD_GROUPS` group."""
    texts = [" ".join(_words(r) for r in refs) for refs in references]
    return {
        group: [i for i, t in enumerate(texts) if any(f" {w} " in t for w in keywords)]
        for group, keywords in KEYWORD_GROUPS.items()
    }


def operation_groups(edits: list[list[tuple[str, str]]]) -> dict[str, list[int]]:
    """Indices of the pairs whose labelled edits contain each operation (synthetic data)."""
    from adc_jax.data.captions import OPERATIONS

    return {op: [i for i, e in enumerate(edits) if any(o == op for o, _ in e)] for op in OPERATIONS}


class _SubsetScorer:
    """BLEU-4 and CIDEr of the model and the baseline on subsets of a split (one JVM call).

    Captions are PTB-tokenised once, exactly as `score_captions` does; per-pair CIDEr uses the idf
    of the whole split (see the module docstring).
    """

    def __init__(
        self, predictions: dict[str, str], split: pipeline.EvalSplit, baseline_caption: str
    ):
        from pycocoevalcap.cider.cider import Cider

        # Private helper of the metrics module: the same tokenisation and empty-caption rules as
        # the headline scores, so subset scores are comparable with them.
        from adc_jax.metrics.captioning import _tokenize

        preds = [predictions.get(k, "") for k in split.keys]
        tokens, refs, _, _ = _tokenize(
            preds + [baseline_caption], [list(r) for r in split.references] + [[baseline_caption]]
        )
        self.refs = refs[:-1]
        self.hyps = {"model": tokens[:-1], "baseline": [tokens[-1]] * len(preds)}
        self.exact = {
            name: self._exact(texts, split)
            for name, texts in (("model", preds), ("baseline", [baseline_caption] * len(preds)))
        }
        gts = dict(enumerate(self.refs))
        self.cider = {
            name: np.asarray(
                Cider().compute_score(gts, {i: [h] for i, h in enumerate(hyps)})[1], np.float64
            )
            for name, hyps in self.hyps.items()
        }

    @staticmethod
    def _exact(texts: list[str], split: pipeline.EvalSplit) -> np.ndarray | None:
        if not has_edit_labels(split):
            return None
        from adc_jax.data.captions import parse_caption

        return np.asarray(
            [parse_caption(t) == frozenset(e) for t, e in zip(texts, split.edits, strict=True)],
            np.float64,
        )

    def scores(self, indices: list[int]) -> dict[str, Any]:
        """{"num_pairs", "model": {...}, "baseline": {...}} for the pairs at `indices`."""
        from pycocoevalcap.bleu.bleu import Bleu

        out: dict[str, Any] = {"num_pairs": len(indices)}
        for name, hyps in self.hyps.items():
            if not indices:
                out[name] = {k: None for k in SUBSET_SCORES}
                continue
            bleu, _ = Bleu(4).compute_score(
                {i: self.refs[i] for i in indices}, {i: [hyps[i]] for i in indices}, verbose=0
            )
            out[name] = {"BLEU_4": float(bleu[3]), "CIDEr": float(self.cider[name][indices].mean())}
            if self.exact[name] is not None:
                out[name]["exact_set_accuracy"] = float(self.exact[name][indices].mean())
        return out


def breakdown(
    predictions: dict[str, str],
    split: pipeline.EvalSplit,
    baseline_caption: str,
    difference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Scores of the model and the baseline per operation, per reference keyword and per scene.

    Args:
      predictions: pair key -> the model's caption.
      split: the scored split (keys, references and, on synthetic data, edit labels).
      baseline_caption: the most frequent training caption.
      difference: the model's `difference_accuracy` result, whose per-operation precision, recall
        and F1 are copied into `by_operation` (None on unlabelled data).

    Returns:
      {"by_operation": {op: group} or None, "by_keyword": {group: {... , "keywords": [...]}},
       "by_scene": {scene: group}} where a group is {"num_pairs", "model": {"BLEU_4", "CIDEr"
       [, "exact_set_accuracy"]}, "baseline": {...}} (+ "precision", "recall", "f1",
       "support" per operation).
    """
    scorer = _SubsetScorer(predictions, split, baseline_caption)
    out: dict[str, Any] = {"by_operation": None}
    if has_edit_labels(split):
        out["by_operation"] = {}
        per_op = (difference or {}).get("per_operation", {})
        for op, indices in operation_groups(split.edits).items():
            entry = scorer.scores(indices)
            prf = per_op.get(op, {})
            entry.update({k: prf.get(k) for k in ("precision", "recall", "f1", "support")})
            out["by_operation"][op] = entry
    out["by_keyword"] = {}
    for group, indices in keyword_groups(split.references).items():
        out["by_keyword"][group] = {
            **scorer.scores(indices),
            "keywords": list(KEYWORD_GROUPS[group]),
        }
    scenes = sorted({s for s in split.scenes if s})
    out["by_scene"] = {
        scene: scorer.scores([i for i, s in enumerate(split.scenes) if s == scene])
        for scene in scenes
    }
    return out


def evaluate(
    decode_fn,
    rng_state,
    state,
    split: pipeline.EvalSplit,
    split_name: str,
    config: ml_collections.ConfigDict,
    mesh,
    vocab: Vocabulary,
    *,
    step: int,
    decode: str,
    baseline_caption: str,
    out_prefix: str,
) -> dict[str, Any]:
    """Decodes and scores a split; writes `<out_prefix>.json`, `.md` and `_samples.txt`."""
    start = time.time()
    nbest = decode_split(
        decode_fn, rng_state, state, split, config, mesh, vocab, batch_size=config.eval.batch_size
    )
    predictions = {k: v[0][0] for k, v in nbest.items()}
    decode_seconds = time.time() - start
    result: dict[str, Any] = {
        "step": step,
        "split": split_name,
        "dataset": config.data.name,
        "decode": decode,
        "beam_size": config.eval.beam_size if decode == "beam" else 1,
        "num_pairs": len(predictions),
        "config_name": config.name,
    }
    result.update(score_predictions(predictions, split))
    eval_dir = os.path.dirname(out_prefix)
    result["baseline"] = baseline_result(
        split, baseline_caption, os.path.join(eval_dir, f"baseline_{split_name}.json")
    )
    result["breakdown"] = breakdown(
        predictions, split, baseline_caption, result.get("difference_accuracy")
    )
    result["decode_seconds"] = round(decode_seconds, 2)
    result["total_seconds"] = round(time.time() - start, 2)
    if jax.process_index() == 0:
        _write_json(out_prefix + ".json", result)
        with open(out_prefix + ".md", "w") as f:
            f.write(markdown_table(result) + "\n")
        write_samples(out_prefix + "_samples.txt", predictions, split, config.eval.num_samples)
    logging.info("Eval %s step %d: %s", split_name, step, summary_line(result))
    return result


def summary_line(result: dict[str, Any]) -> str:
    s = result["scores"]
    line = (
        f"BLEU-4 {s['BLEU_4']:.3f}  METEOR {s['METEOR']:.3f}  ROUGE-L {s['ROUGE_L']:.3f}  "
        f"CIDEr {s['CIDEr']:.3f}"
    )
    if result.get("difference_accuracy"):
        line += f"  diff-acc {result['difference_accuracy']['exact_set_accuracy']:.3f}"
    line += f"  (baseline CIDEr {result['baseline']['scores']['CIDEr']:.3f})"
    return line


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown_table(result: dict[str, Any]) -> str:
    """The model's and the baseline's scores as one Markdown table."""
    has_diff = result.get("difference_accuracy") is not None
    header = ["system", *SCORE_COLUMNS] + (["diff. acc."] if has_diff else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(name, r):
        cells = [name] + [_fmt(r["scores"].get(c)) for c in SCORE_COLUMNS]
        if has_diff:
            cells.append(_fmt(r["difference_accuracy"]["exact_set_accuracy"]))
        return "| " + " | ".join(cells) + " |"

    lines.append(
        row(f"{result['config_name']} (step {result['step']}, {result['decode']})", result)
    )
    lines.append(
        row(f'most frequent caption: "{result["baseline"]["caption"]}"', result["baseline"])
    )
    notes = result["scores"].get("notes", {})
    if notes.get("SPICE") and result["scores"].get("SPICE") is None:
        lines.append(f"\nSPICE/SPIDEr n/a: {notes['SPICE']}")
    if result.get("breakdown"):
        lines.append("\n" + breakdown_tables(result["breakdown"]))
    return "\n".join(lines)


def breakdown_tables(bd: dict[str, Any]) -> str:
    """The breakdowns of `breakdown()` as Markdown tables (model vs most-frequent baseline)."""
    sections = []
    if bd.get("by_operation"):
        header = [
            "operation",
            "pairs",
            "CIDEr",
            "CIDEr (baseline)",
            "BLEU-4",
            "BLEU-4 (baseline)",
            "exact acc.",
            "exact acc. (baseline)",
            "precision",
            "recall",
            "F1",
        ]
        rows = []
        for op, g in bd["by_operation"].items():
            m, b = g["model"], g["baseline"]
            rows.append(
                [
                    op,
                    str(g["num_pairs"]),
                    _fmt(m["CIDEr"]),
                    _fmt(b["CIDEr"]),
                    _fmt(m["BLEU_4"]),
                    _fmt(b["BLEU_4"]),
                    _fmt(m.get("exact_set_accuracy")),
                    _fmt(b.get("exact_set_accuracy")),
                    _fmt(g.get("precision")),
                    _fmt(g.get("recall")),
                    _fmt(g.get("f1")),
                ]
            )
        sections.append(
            "Per operation (pairs whose labelled edits contain it; precision/recall/F1 "
            "of that operation's edits over the whole split):\n\n" + _table(header, rows)
        )
    for key, title, first in (
        (
            "by_keyword",
            "By reference keyword (pairs whose references use one of the group's "
            "words; see evaluate.KEYWORD_GROUPS):",
            "keywords",
        ),
        ("by_scene", "By scene:", "scene"),
    ):
        if not bd.get(key):
            continue
        header = [first, "pairs", "CIDEr", "CIDEr (baseline)", "BLEU-4", "BLEU-4 (baseline)"]
        rows = [
            [
                name,
                str(g["num_pairs"]),
                _fmt(g["model"]["CIDEr"]),
                _fmt(g["baseline"]["CIDEr"]),
                _fmt(g["model"]["BLEU_4"]),
                _fmt(g["baseline"]["BLEU_4"]),
            ]
            for name, g in bd[key].items()
        ]
        sections.append(title + "\n\n" + _table(header, rows))
    return "\n\n".join(sections)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_samples(
    path: str, predictions: dict[str, str], split: pipeline.EvalSplit, num: int
) -> None:
    """Writes the first `num` predictions with their references (and labels)."""
    with open(path, "w") as f:
        for key, refs, edits in list(zip(split.keys, split.references, split.edits, strict=True))[
            :num
        ]:
            f.write(f"[{key}]\n  predicted: {predictions.get(key, '')}\n")
            for r in refs:
                f.write(f"  reference: {r}\n")
            if edits:
                f.write("  edits:     " + ", ".join(f"{o} {c}" for o, c in edits) + "\n")
            f.write("\n")


def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ command line


def _define_flags():
    from absl import flags

    flags.DEFINE_string("workdir", None, "Workdir of a training run (holds config.json).")
    flags.DEFINE_enum("split", "eval", ["train", "validation", "eval"], "Split to score.")
    flags.DEFINE_enum("decode", None, ["greedy", "beam"], "Decoding (default: the run's).")
    flags.DEFINE_integer(
        "beam_size",
        None,
        "Beam size (default: the run's eval.beam_size); "
        "implies --decode=beam unless --decode is given.",
    )
    flags.DEFINE_float("length_penalty", None, "Beam length penalty (default: the run's).")
    flags.DEFINE_integer("checkpoint_step", None, "Checkpoint to score (default: the latest).")
    flags.DEFINE_integer("max_examples", None, "Score only the first N pairs (default: all).")
    flags.mark_flag_as_required("workdir")
    return flags.FLAGS


class EvaluateError(ValueError):
    """A command-line argument of `evaluate_workdir` cannot work; the message says why."""


def evaluate_workdir(
    workdir: str,
    *,
    split: str = "eval",
    decode: str | None = None,
    beam_size: int | None = None,
    length_penalty: float | None = None,
    checkpoint_step: int | None = None,
    max_examples: int | None = None,
) -> tuple[dict[str, Any], str]:
    """Scores a checkpoint of a training run with the config saved in its workdir.

    Args:
      workdir: the run's workdir (config.json, vocab.json, checkpoints/).
      split: "train", "validation" or "eval".
      decode: "greedy" or "beam"; default: beam when `beam_size` is given, else the run's.
      beam_size, length_penalty: beam search settings (default: the run's eval settings).
      checkpoint_step: the checkpoint to score (default: the latest).
      max_examples: score only the first N pairs (default: the run's eval.max_examples).

    Returns:
      (result, prefix): the result dict and the path prefix of the files written
      (`<workdir>/eval/<split>_<step>_<decode>` + .json, .md, _samples.txt).

    Raises:
      FileNotFoundError: no config, vocabulary or checkpoint (the message says what to do).
      EvaluateError: a bad argument (decode mode, beam size, split).
      adc_jax.config.ConfigError: the checkpoint does not match the saved config.
      adc_jax.checkpointing.CheckpointError: the checkpoint cannot be read.
    """
    from adc_jax import step as step_lib
    from adc_jax.metrics.captioning import most_frequent_caption
    from adc_jax.restore import load_trained
    from adc_jax.train import prepare_data

    if decode not in (None, "greedy", "beam"):
        raise EvaluateError(f"decode must be 'greedy' or 'beam', got {decode!r}.")
    if beam_size is not None and beam_size < 1:
        raise EvaluateError(f"beam_size must be >= 1, got {beam_size}.")
    run = load_trained(workdir, checkpoint_step)
    config = run.config
    decode = decode or ("beam" if beam_size is not None else config.eval.decode)
    if beam_size is not None:
        config.eval.beam_size = beam_size
    if length_penalty is not None:
        config.eval.length_penalty = length_penalty
    # The run may have been trained on another number of devices.
    n_dev = jax.device_count()
    config.eval.batch_size = max(n_dev, config.eval.batch_size // n_dev * n_dev)
    builder, _, train_captions = prepare_data(config, run.workdir)
    if split not in builder.info.splits:
        raise EvaluateError(
            f"The dataset of {run.workdir} has no {split!r} split; it has "
            f"{sorted(builder.info.splits)}."
        )
    eval_split = pipeline.load_eval_split(
        builder.as_data_source(split),
        max_examples if max_examples is not None else config.eval.max_examples,
    )
    ts = run.train_state
    decode_fn = step_lib.jit_decode(
        ts, run.mesh, decode, config.eval.beam_size, config.eval.length_penalty
    )
    out_dir = os.path.join(run.workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    prefix = os.path.join(out_dir, f"{split}_{run.step}_{decode}")
    result = evaluate(
        decode_fn,
        ts.rng_state,
        ts.state,
        eval_split,
        split,
        config,
        run.mesh,
        run.vocab,
        step=run.step,
        decode=decode,
        baseline_caption=most_frequent_caption(train_captions),
        out_prefix=prefix,
    )
    return result, prefix


def main(argv: list[str]) -> None:
    import sys

    from adc_jax.checkpointing import CheckpointError
    from adc_jax.config import ConfigError

    if len(argv) > 1:
        print(f"Error: unexpected arguments {' '.join(argv[1:])!r}; see --help.", file=sys.stderr)
        sys.exit(2)
    f = FLAGS
    try:
        result, prefix = evaluate_workdir(
            f.workdir,
            split=f.split,
            decode=f.decode,
            beam_size=f.beam_size,
            length_penalty=f.length_penalty,
            checkpoint_step=f.checkpoint_step,
            max_examples=f.max_examples,
        )
    except (FileNotFoundError, EvaluateError, CheckpointError, ConfigError) as e:
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(1)
    print(markdown_table(result))
    print(f"\nWrote {prefix}.json, {prefix}.md and {prefix}_samples.txt")


if __name__ == "__main__":
    from absl import app

    FLAGS = _define_flags()
    app.run(main)
