"""Decode a split and score it: pycocoevalcap metrics, difference accuracy and a trivial baseline.

Used during training (`adc_jax.train` writes `workdir/eval/step_<N>.json`) and as a command line
that scores any checkpoint of a workdir with the config saved beside it:

  python -m adc_jax.evaluate --workdir=DIR [--split=eval] [--decode=greedy|beam] [--beam_size=4]
                             [--length_penalty=0.6] [--checkpoint_step=N] [--max_examples=N]
                             [--extra_metrics=fense,spider_fl,clap_sim]
  python -m adc_jax.evaluate --predictions=FILE [--extra_metrics=...]   (rescore, no model)

(`evaluate_workdir(...)` is the same from Python). It writes `DIR/eval/<split>_<step>_<decode>.json`,
a Markdown table `<...>.md` and sample predictions beside their references `<...>_samples.txt`.
Every result has the scores of the most-frequent-caption baseline (`adc_jax.metrics.baseline`),
so it shows what "learned nothing" scores, breakdowns per operation, reference keyword and
scene (`adc_jax.metrics.breakdown`), and the diagnostics (`adc_jax.metrics.diagnostics`: swap
consistency, identical-pair rate, distinct captions, discriminability), for which the split is
decoded twice more, swapped and as (clip 1, clip 1), unless eval.diagnostics is False; with
eval.extra_metrics, aac-metrics' scores (`adc_jax.metrics.aac`). `adc_jax.report` formats the
tables.

SPICE and SPIDEr are null when Stanford CoreNLP is not installed (detected from its two jars in
pycocoevalcap's spice/lib, see `adc_jax.metrics.captioning.spice_status`); `scores.notes.SPICE`
gives the reason and `tools/get_spice_models.sh` installs it. A workdir without config.json,
vocab.json or a checkpoint is a one-line error naming it (exit status 1).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from jax.experimental import multihost_utils

from adc_jax import report, rundir
from adc_jax import sharding as sharding_lib
from adc_jax import step as step_lib
from adc_jax.checkpointing import CheckpointError
from adc_jax.config import ConfigError
from adc_jax.data import clip_store, pipeline
from adc_jax.data.eval_split import EvalSplit
from adc_jax.data.tokenizer import Vocabulary
from adc_jax.metrics.aac import extra_metric_names, extra_scores
from adc_jax.metrics.baseline import baseline_result
from adc_jax.metrics.breakdown import breakdown
from adc_jax.metrics.diagnostics import diagnostics
from adc_jax.metrics.scores import score_predictions
from adc_jax.predictions import (
    PROBES,
    PredictionsError,
    predictions_path,
    read_predictions,
    read_probes,
    write_predictions,
)
from adc_jax.train_state import TrainState

SPLITS = ("train", "validation", "eval")


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    """How captions are decoded for an evaluation.

    mode: "greedy" or "beam"; beam_size, length_penalty: beam search (GNMT alpha);
    batch_size: global pairs per decoding batch (a multiple of the device count).
    """

    mode: str
    beam_size: int
    length_penalty: float
    batch_size: int

    @property
    def name(self) -> str:
        """ "greedy", or "beam<K>_lp<alpha>": names the files of one decode setting."""
        return (
            "greedy" if self.mode == "greedy" else f"beam{self.beam_size}_lp{self.length_penalty:g}"
        )

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> DecodeSettings:
        e = config.eval
        return cls(e.decode, int(e.beam_size), float(e.length_penalty), int(e.batch_size))


def decode_split(
    decode_fn,
    rng_state,
    state,
    split: EvalSplit,
    config: ml_collections.ConfigDict,
    mesh,
    vocab: Vocabulary,
    *,
    batch_size: int,
    nbest: int = 1,
    clips: str = "stored",
) -> dict[str, list[tuple[str, float]]]:
    """Captions every pair of `split`: key -> n-best [(caption, score)], best first.

    `clips` arranges each pair's clips as `pipeline.eval_batches` does: "stored", "swapped"
    (clip 2, clip 1) or "identical" (clip 1, clip 1).
    """
    results: dict[str, list[tuple[str, float]]] = {}
    for batch in pipeline.eval_batches(
        split,
        config,
        batch_size=batch_size,
        vocab=vocab,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        clips=clips,
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


class Evaluator:
    """Decodes and scores one split with a compiled decoder; called once per evaluated step.

    Args:
      train_state: the run's `train_state.TrainState` (its graph; the state is passed to each call).
      config: the run's config (clip length, dataset and run names, number of samples written).
      mesh: the device mesh.
      vocab: the run's vocabulary.
      split, split_name: the split to score and its name.
      settings: the decoding settings.
      baseline_captions: tier -> the most frequent training caption of the tier (the trivial
        baseline; {0: caption} for untiered data, `rundir.RunData.baseline_captions`).
    """

    def __init__(
        self,
        train_state: TrainState,
        config: ml_collections.ConfigDict,
        mesh,
        vocab: Vocabulary,
        split: EvalSplit,
        split_name: str,
        settings: DecodeSettings,
        *,
        baseline_captions: Mapping[int, str],
    ):
        self.config, self.mesh, self.vocab = config, mesh, vocab
        self.split, self.split_name, self.settings = split, split_name, settings
        self.baseline_captions = dict(baseline_captions)
        self.decode_fn = step_lib.jit_decode(
            train_state, mesh, settings.mode, settings.beam_size, settings.length_penalty
        )

    def _decode(self, rng_state, state, clips: str, nbest: int):
        return decode_split(
            self.decode_fn,
            rng_state,
            state,
            self.split,
            self.config,
            self.mesh,
            self.vocab,
            batch_size=self.settings.batch_size,
            nbest=nbest,
            clips=clips,
        )

    def __call__(self, rng_state, state, *, step: int, out_prefix: str) -> dict[str, Any]:
        """Decodes and scores the split with `state`; writes `<out_prefix>.json`, `.md` and
        `_samples.txt` (process 0) and returns the result."""
        start = time.time()
        beam = self.settings.beam_size if self.settings.mode == "beam" else 1
        nbest = self._decode(rng_state, state, "stored", beam)
        predictions = {k: v[0][0] for k, v in nbest.items()}
        decode_seconds = time.time() - start
        probes: dict[str, dict[str, str]] = {}
        if self.config.eval.get("diagnostics", True):  # configs saved before the field: on
            for clips in PROBES:  # the same decoder settings as the predictions
                decoded = self._decode(rng_state, state, clips, 1)
                probes[clips] = {k: v[0][0] for k, v in decoded.items()}
        diagnostics_seconds = time.time() - start - decode_seconds
        result: dict[str, Any] = {
            "step": step,
            "split": self.split_name,
            "dataset": self.config.data.name,
            "decode": self.settings.mode,
            "beam_size": self.settings.beam_size if self.settings.mode == "beam" else 1,
            "num_pairs": len(predictions),
            "config_name": self.config.name,
        }
        if self.config.data.name == "adiff":
            result["subset"] = self.config.data.adiff_subset
        result.update(score_predictions(predictions, self.split, intervals=True))
        result["diagnostics"] = diagnostics(
            predictions,
            self.split,
            swapped=probes.get("swapped"),
            identical=probes.get("identical"),
        )
        extra = extra_metric_names(self.config.eval.get("extra_metrics", ""))
        if extra:
            result["extra_metrics"] = extra_scores(extra, predictions, self.split)
        eval_dir = os.path.dirname(out_prefix)
        result["baseline"] = baseline_result(
            self.split,
            self.baseline_captions,
            os.path.join(eval_dir, f"baseline_{self.split_name}.json"),
        )
        if set(self.split.tiers) == {0}:
            result["breakdown"] = breakdown(
                predictions,
                self.split,
                self.baseline_captions[0],
                result.get("difference_accuracy"),
            )
        else:
            result["tiers"] = self._tier_results(predictions, eval_dir)
        result["predictions_file"] = os.path.basename(predictions_path(out_prefix))
        result["decode_seconds"] = round(decode_seconds, 2)
        result["diagnostics_decode_seconds"] = round(diagnostics_seconds, 2)
        result["total_seconds"] = round(time.time() - start, 2)
        if jax.process_index() == 0:
            write_predictions(predictions_path(out_prefix), nbest, self.split, probes)
            _write_json(out_prefix + ".json", result)
            with open(out_prefix + ".md", "w") as f:
                f.write(report.markdown_table(result) + "\n")
            report.write_samples(
                out_prefix + "_samples.txt", predictions, self.split, self.config.eval.num_samples
            )
        logging.info("Eval %s step %d: %s", self.split_name, step, report.summary_line(result))
        return result

    def _tier_results(self, predictions: dict[str, str], eval_dir: str) -> dict[str, Any]:
        """tier -> the scores of that tier's entries and of its most-frequent-answer baseline."""
        out = {}
        for tier, split in self.split.by_tier().items():
            tier_result: dict[str, Any] = {"num_pairs": len(split.keys)}
            tier_result.update(
                score_predictions({k: predictions[k] for k in split.keys}, split, intervals=True)
            )
            tier_result["baseline"] = baseline_result(
                split,
                {tier: self.baseline_captions[tier]},
                os.path.join(eval_dir, f"baseline_{self.split_name}_tier{tier}.json"),
            )
            out[str(tier)] = tier_result
        return out


def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


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
    extra_metrics: str | None = None,
) -> tuple[dict[str, Any], str]:
    """Scores a checkpoint of a training run with the config saved in its workdir.

    Args:
      workdir: the run's workdir (config.json, vocab.json, checkpoints/).
      split: "train", "validation" or "eval".
      decode: "greedy" or "beam"; default: beam when `beam_size` is given, else the run's.
      beam_size, length_penalty: beam search settings (default: the run's eval settings).
      checkpoint_step: the checkpoint to score (default: the latest).
      max_examples: score only the first N pairs (default: the run's eval.max_examples).
      extra_metrics: comma-separated aac-metrics scores to add (`adc_jax.metrics.aac`; default:
        the run's eval.extra_metrics).

    Returns:
      (result, prefix): the result dict and the path prefix of the files written
      (`<workdir>/eval/<split>_<step>_<decode>` + .json, .md, _samples.txt).

    Raises:
      FileNotFoundError: no config, vocabulary or checkpoint (the message says what to do).
      EvaluateError: a bad argument (decode mode, beam size, split).
      adc_jax.config.ConfigError: the checkpoint does not match the saved config.
      adc_jax.checkpointing.CheckpointError: the checkpoint cannot be read.
    """
    if decode not in (None, "greedy", "beam"):
        raise EvaluateError(f"decode must be 'greedy' or 'beam', got {decode!r}.")
    if beam_size is not None and beam_size < 1:
        raise EvaluateError(f"beam_size must be >= 1, got {beam_size}.")
    if extra_metrics is not None:
        extra_metric_names(extra_metrics)  # an unknown name fails before the model loads
    run = rundir.load_trained(workdir, checkpoint_step)
    config = run.config
    with config.unlocked():
        # Runs saved before these fields existed decode and score as a run made today does.
        config.eval.diagnostics = bool(config.eval.get("diagnostics", True))
        if extra_metrics is not None or "extra_metrics" not in config.eval:
            config.eval.extra_metrics = extra_metrics or ""
    # The run may have been trained on another number of devices.
    n_dev = jax.device_count()
    settings = DecodeSettings(
        mode=decode or ("beam" if beam_size is not None else config.eval.decode),
        beam_size=beam_size if beam_size is not None else int(config.eval.beam_size),
        length_penalty=float(
            length_penalty if length_penalty is not None else config.eval.length_penalty
        ),
        batch_size=max(n_dev, config.eval.batch_size // n_dev * n_dev),
    )
    data = rundir.prepare_data(config, run.workdir)
    if split not in clip_store.pair_splits(data.builder):
        raise EvaluateError(
            f"The dataset of {run.workdir} has no {split!r} split; it has "
            f"{sorted(clip_store.pair_splits(data.builder))}."
        )
    eval_split = data.eval_split(
        split, max_examples if max_examples is not None else config.eval.max_examples
    )
    evaluator = Evaluator(
        run.train_state,
        config,
        run.mesh,
        run.vocab,
        eval_split,
        split,
        settings,
        baseline_captions=data.baseline_captions(),
    )
    out_dir = os.path.join(run.workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    prefix = os.path.join(out_dir, f"{split}_{run.step}_{settings.name}")
    ts = run.train_state
    result = evaluator(ts.rng_state, ts.state, step=run.step, out_prefix=prefix)
    return result, prefix


def rescore_predictions(path: str, extra_metrics: tuple[str, ...] = ()) -> dict[str, Any]:
    """Scores a saved predictions file (`adc_jax.predictions`) without the model: the scores,
    difference accuracy, diagnostics and intervals of the run that wrote it (and per tier for
    tiered data), plus the optional `extra_metrics` (`adc_jax.metrics.aac`).

    Raises:
      FileNotFoundError: no such file.
      adc_jax.predictions.PredictionsError: the file is malformed (names the line).
    """
    predictions, split = read_predictions(path)
    probes = read_probes(path)
    result: dict[str, Any] = {"predictions_file": path, "num_pairs": len(predictions)}
    result.update(score_predictions(predictions, split, intervals=True))
    result["diagnostics"] = diagnostics(
        predictions, split, swapped=probes["swapped"], identical=probes["identical"]
    )
    if extra_metrics:
        result["extra_metrics"] = extra_scores(extra_metrics, predictions, split)
    if set(split.tiers) != {0}:
        result["tiers"] = {}
        for tier, sub in split.by_tier().items():
            tier_result: dict[str, Any] = {"num_pairs": len(sub.keys)}
            tier_result.update(
                score_predictions({k: predictions[k] for k in sub.keys}, sub, intervals=True)
            )
            result["tiers"][str(tier)] = tier_result
    return result


# ------------------------------------------------------------------------------------ command line


def define_flags() -> None:
    """Defines the command line's flags (called by `__main__` only: `adc_jax.main` defines
    flags of the same names)."""
    flags.DEFINE_string("workdir", None, "Workdir of a training run (holds config.json).")
    flags.DEFINE_enum("split", "eval", list(SPLITS), "Split to score.")
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
    flags.DEFINE_string(
        "extra_metrics",
        None,
        "Comma-separated aac-metrics scores to add (fense, spider_fl, clap_sim; needs "
        "pip install -e '.[aac]'); default: the run's eval.extra_metrics.",
    )
    flags.DEFINE_string(
        "predictions",
        None,
        "Rescore this saved predictions file (<eval prefix>_predictions.jsonl) without the "
        "model, instead of evaluating a workdir; writes <file>.rescored.json.",
    )


def main(argv: list[str]) -> None:
    """The absl entry point of `python -m adc_jax.evaluate` (flags from `define_flags`); from
    Python, call `evaluate_workdir`."""
    if len(argv) > 1:
        print(f"Error: unexpected arguments {' '.join(argv[1:])!r}; see --help.", file=sys.stderr)
        sys.exit(2)
    f = flags.FLAGS
    if f.predictions:
        try:
            result = rescore_predictions(f.predictions, extra_metric_names(f.extra_metrics or ""))
        except (FileNotFoundError, PredictionsError, ValueError) as e:
            print(f"Error: {e}", file=sys.stderr)
            sys.exit(1)
        out = f.predictions + ".rescored.json"
        _write_json(out, result)
        print(report.rescore_summary(result))
        print(f"\nWrote {out}")
        return
    if not f.workdir:
        print("Error: pass --workdir=DIR (a training run) or --predictions=FILE.", file=sys.stderr)
        sys.exit(2)
    try:
        result, prefix = evaluate_workdir(
            f.workdir,
            split=f.split,
            decode=f.decode,
            beam_size=f.beam_size,
            length_penalty=f.length_penalty,
            checkpoint_step=f.checkpoint_step,
            max_examples=f.max_examples,
            extra_metrics=f.extra_metrics,
        )
    except (FileNotFoundError, EvaluateError, CheckpointError, ConfigError, ValueError) as e:
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(1)
    print(report.markdown_table(result))
    print(
        f"\nWrote {prefix}.json, {prefix}.md, {prefix}_samples.txt and {predictions_path(prefix)}"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
