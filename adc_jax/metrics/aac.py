"""Optional scores of the audio-captioning community, computed by aac-metrics (Labbé et al.).

DCASE's audio captioning task ranks systems by FENSE (Sentence-BERT similarity with a fluency-
error penalty); aac-metrics also computes SPIDEr-FL (SPIDEr with that penalty) and CLAP-sim (the
cosine similarity of CLAP text embeddings). None of them is part of the paper's scores, so they
are opt-in: FETCH_COMMAND installs PyTorch and the package (aac-metrics 0.5.5 and CLAP's msclap
without their numpy<2 pins, which JAX's numpy 2 rules out) and fetches its models and jars once
(`aac-metrics-download` needs the internet), and

  python -m adc_jax.main ... --config.eval.extra_metrics=fense,spider_fl,clap_sim
  python -m adc_jax.evaluate --predictions=FILE --extra_metrics=fense

adds them to the eval JSON (`result["extra_metrics"]`: "scores", 95% bootstrap "intervals" over
the pairs from the per-pair scores, with the resampling of `adc_jax.metrics.bootstrap`, and
"notes"). When the package or one of a metric's downloads is missing, that metric's score is None
and its note names what is missing and the command that fetches it, as SPICE's does; an
evaluation never fails or starts a download because of them (the fluency checkpoint, the SPICE
files and the Hugging Face models are looked for in their caches first, and the models are
loaded with HF_HUB_OFFLINE=1).

Public API:
  EXTRA_METRICS, FETCH_COMMAND             the metric names; the command that installs them.
  extra_metric_names(text)                 "fense,clap_sim" -> ("fense", "clap_sim"), checked.
  extra_scores(names, predictions, split)  {"scores", "intervals", "notes"}.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from adc_jax.config import EXTRA_METRICS  # the metrics this module adds, by their names
from adc_jax.data.eval_split import EvalSplit
from adc_jax.metrics import bootstrap

# What a user runs to be able to compute them (aac-metrics and msclap pin numpy<2 and
# pythonwrench<0.4, which conflict with JAX's numpy 2: they go in without their pins).
FETCH_COMMAND = (
    "pip install -e '.[aac]' && pip install --no-deps aac-metrics==0.5.5 msclap==1.3.4 "
    "torchlibrosa && aac-metrics-download"
)
# aac-metrics' fluency-error checker (FENSE and SPIDEr-FL), a file it downloads on first use.
ECHECKER_FILE = "echecker_clotho_audiocaps_base.ckpt"
# Hugging Face hub files each metric loads: (repository, file) looked up in the local cache.
HUB_FILES = {
    "fense": ("sentence-transformers/paraphrase-TinyBERT-L6-v2", "config.json"),
    "clap_sim": ("microsoft/msclap", "CLAP_weights_2023.pth"),
}


def extra_metric_names(text: str) -> tuple[str, ...]:
    """The metric names of a comma-separated list ("" -> ()).

    Raises:
      ValueError: a name that is not one of EXTRA_METRICS (the message lists them).
    """
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in EXTRA_METRICS]
    if unknown:
        raise ValueError(
            f"Unknown extra metric(s) {unknown} in {text!r}: choose from {', '.join(EXTRA_METRICS)}."
        )
    return names


def _echecker_path() -> str:
    import torch

    home = os.getenv("FENSE_DATA", os.path.join(torch.hub.get_dir(), "fense_data"))
    return os.path.join(os.path.expanduser(home), ECHECKER_FILE)


def _missing_files(name: str) -> str | None:
    """Why `name` cannot run without a download (None: its local files are there; the Hugging
    Face models are checked by loading them offline)."""
    if name in ("fense", "spider_fl") and not os.path.isfile(_echecker_path()):
        return f"aac-metrics' fluency checker {_echecker_path()} is missing"
    if name in HUB_FILES:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = HUB_FILES[name]
        if not isinstance(try_to_load_from_cache(repo, filename), str):
            return f"the model {repo} is not in the Hugging Face cache"
    if name == "spider_fl":
        from aac_metrics.functional.spice import check_spice_install
        from aac_metrics.utils.globals import get_default_cache_path

        try:
            check_spice_install(get_default_cache_path())
        except (FileNotFoundError, NotADirectoryError) as e:
            return f"aac-metrics' SPICE is not installed ({e})"
    return None


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Hugging Face libraries read only their local cache inside this block."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _per_pair(name: str, candidates: list[str], references: list[list[str]]) -> np.ndarray:
    """[P] aac-metrics' per-pair scores of `name` (its corpus score is their mean)."""
    from aac_metrics import functional

    fn = {
        "fense": functional.fense,
        "spider_fl": functional.spider_fl,
        "clap_sim": functional.clap_sim,
    }[name]
    _, per_pair = fn(candidates, references, return_all_scores=True, device="cpu")
    return np.asarray(per_pair[name].cpu().numpy(), np.float64)


def extra_scores(
    names: tuple[str, ...], predictions: Mapping[str, str], split: EvalSplit
) -> dict[str, Any]:
    """aac-metrics' scores of `names` for the split's predictions.

    Returns:
      {"scores": name -> corpus score or None, "intervals": name -> [lo, hi] (95% bootstrap over
      the pairs, 500 resamples, seed 0), "notes": name -> why a score is None and what to run}.
    """
    out: dict[str, Any] = {"scores": {}, "intervals": {}, "notes": {}}
    installed = importlib.util.find_spec("aac_metrics") is not None
    candidates = [predictions[k] for k in split.keys]
    references = [list(r) for r in split.references]
    indices = bootstrap.resample_indices(len(candidates), bootstrap.NUM_RESAMPLES, 0)
    for name in names:
        out["scores"][name] = None
        reason = None if installed else "aac-metrics is not installed"
        if reason is None:
            try:
                with _offline():
                    reason = _missing_files(name)
                    values = _per_pair(name, candidates, references) if reason is None else None
            except Exception as e:  # noqa: BLE001 - a missing model must not end an evaluation
                reason = f"aac-metrics failed ({type(e).__name__}: {str(e)[:300]})"
            if reason is None:
                out["scores"][name] = float(values.mean())
                out["intervals"][name] = bootstrap.percentile_interval(
                    values[indices].mean(axis=1), bootstrap.LEVEL
                )
                continue
        out["notes"][name] = f"{reason}; run: {FETCH_COMMAND}"
    return out
