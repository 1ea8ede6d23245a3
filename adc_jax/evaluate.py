"""Decode a split and score it: pycocoevalcap metrics, difference accuracy and a trivial baseline.

Used during training (`train.py` writes `workdir/eval/step_<N>.json`) and as a command line that
scores any checkpoint of a workdir with the config saved beside it:

  python -m adc_jax.evaluate --workdir=DIR [--split=eval] [--decode=greedy|beam] [--beam_size=4]
                             [--checkpoint_step=N]

It writes `DIR/eval/<split>_<step>_<decode>.json`, a Markdown table `<...>.md` and sample
predictions beside their references `<...>_samples.txt`. Every table has a row for the
most-frequent-caption baseline (the most frequent training caption predicted for every pair), so
it shows what "learned nothing" scores.
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


def decode_split(decode_fn, rng_state, state, split: pipeline.EvalSplit,
                 config: ml_collections.ConfigDict, mesh, vocab: Vocabulary, *,
                 batch_size: int, nbest: int = 1) -> dict[str, list[tuple[str, float]]]:
    """Captions every pair of `split`: key -> n-best [(caption, score)], best first."""
    results: dict[str, list[tuple[str, float]]] = {}
    for batch in pipeline.eval_batches(split, config, batch_size=batch_size,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count()):
        valid, index = batch.pop("valid"), batch.pop("index")
        tokens, scores = decode_fn(rng_state, state, sharding_lib.global_batch(batch, mesh))
        tokens = np.asarray(multihost_utils.process_allgather(tokens, tiled=True))
        scores = np.asarray(multihost_utils.process_allgather(scores, tiled=True))
        valid = np.asarray(multihost_utils.process_allgather(valid, tiled=True))
        index = np.asarray(multihost_utils.process_allgather(index, tiled=True))
        for row in np.flatnonzero(valid):
            key = split.keys[int(index[row])]
            results[key] = [(vocab.decode(tokens[row, k]), float(scores[row, k]))
                            for k in range(min(nbest, tokens.shape[1]))]
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


def baseline_result(split: pipeline.EvalSplit, baseline_caption: str, cache_path: str | None
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
        _write_json(cache_path, {"caption": baseline_caption, "keys": len(split.keys),
                                 "result": result})
    return result


def evaluate(decode_fn, rng_state, state, split: pipeline.EvalSplit, split_name: str,
             config: ml_collections.ConfigDict, mesh, vocab: Vocabulary, *, step: int,
             decode: str, baseline_caption: str, out_prefix: str) -> dict[str, Any]:
    """Decodes and scores a split; writes `<out_prefix>.json`, `.md` and `_samples.txt`."""
    start = time.time()
    nbest = decode_split(decode_fn, rng_state, state, split, config, mesh, vocab,
                         batch_size=config.eval.batch_size)
    predictions = {k: v[0][0] for k, v in nbest.items()}
    decode_seconds = time.time() - start
    result: dict[str, Any] = {
        "step": step, "split": split_name, "dataset": config.data.name, "decode": decode,
        "beam_size": config.eval.beam_size if decode == "beam" else 1,
        "num_pairs": len(predictions), "config_name": config.name,
    }
    result.update(score_predictions(predictions, split))
    eval_dir = os.path.dirname(out_prefix)
    result["baseline"] = baseline_result(
        split, baseline_caption, os.path.join(eval_dir, f"baseline_{split_name}.json"))
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
    line = (f"BLEU-4 {s['BLEU_4']:.3f}  METEOR {s['METEOR']:.3f}  ROUGE-L {s['ROUGE_L']:.3f}  "
            f"CIDEr {s['CIDEr']:.3f}")
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

    lines.append(row(f"{result['config_name']} (step {result['step']}, {result['decode']})",
                     result))
    lines.append(row(f"most frequent caption: \"{result['baseline']['caption']}\"",
                     result["baseline"]))
    notes = result["scores"].get("notes", {})
    if notes.get("SPICE") and result["scores"].get("SPICE") is None:
        lines.append(f"\nSPICE/SPIDEr n/a: {notes['SPICE']}")
    return "\n".join(lines)


def write_samples(path: str, predictions: dict[str, str], split: pipeline.EvalSplit,
                  num: int) -> None:
    """Writes the first `num` predictions with their references (and labels)."""
    with open(path, "w") as f:
        for key, refs, edits in list(zip(split.keys, split.references, split.edits,
                                         strict=True))[:num]:
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
    flags.DEFINE_integer("beam_size", None, "Beam size (default: the run's eval.beam_size).")
    flags.DEFINE_float("length_penalty", None, "Beam length penalty (default: the run's).")
    flags.DEFINE_integer("checkpoint_step", None, "Checkpoint to score (default: the latest).")
    flags.DEFINE_integer("max_examples", None, "Score only the first N pairs (default: all).")
    flags.mark_flag_as_required("workdir")
    return flags.FLAGS


def main(argv: list[str]) -> None:
    import sys

    from adc_jax import step as step_lib
    from adc_jax.metrics.captioning import most_frequent_caption
    from adc_jax.restore import load_trained
    from adc_jax.train import prepare_data

    del argv
    f = FLAGS
    try:
        run = load_trained(f.workdir, f.checkpoint_step)
    except FileNotFoundError as e:
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(1)
    config = run.config
    decode = f.decode or config.eval.decode
    if f.beam_size is not None:
        config.eval.beam_size = f.beam_size
    if f.length_penalty is not None:
        config.eval.length_penalty = f.length_penalty
    builder, _, train_captions = prepare_data(config, run.workdir)
    split = pipeline.load_eval_split(builder.as_data_source(f.split),
                                     f.max_examples if f.max_examples is not None
                                     else config.eval.max_examples)
    ts = run.train_state
    decode_fn = step_lib.jit_decode(ts, run.mesh, decode, config.eval.beam_size,
                                    config.eval.length_penalty)
    out_dir = os.path.join(run.workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    prefix = os.path.join(out_dir, f"{f.split}_{run.step}_{decode}")
    result = evaluate(decode_fn, ts.rng_state, ts.state, split, f.split, config, run.mesh,
                      run.vocab, step=run.step, decode=decode,
                      baseline_caption=most_frequent_caption(train_captions), out_prefix=prefix)
    print(markdown_table(result))
    print(f"\nWrote {prefix}.json, {prefix}.md and {prefix}_samples.txt")


if __name__ == "__main__":
    from absl import app

    FLAGS = _define_flags()
    app.run(main)
