"""The run directory (workdir) of a training run: its config, vocabulary, data and checkpoints.

A workdir holds
  config.json     the resolved config (`write_config` / `read_config`);
  vocab.json      the vocabulary built from the training captions (`prepare_data`), or, with
                  model.lm_path, the LM's tokenizer (`adc_jax.data.lm_tokenizer`);
  checkpoints/    Orbax checkpoints (`adc_jax.checkpointing`);
  metrics.jsonl, tensorboard/, eval/, train.log   written by training and evaluation.

Training (`adc_jax.train`), evaluation (`adc_jax.evaluate`) and captioning (`adc_jax.caption`) all
open a run through this module, so none of them needs another's code: evaluation and captioning
rebuild the model from the saved `config.json` (`load_trained`), so a checkpoint is never paired
with a model of another shape. A config.json written before a field was added to
`adc_jax.config` gets that field's current default, with a warning naming it
(`fill_config_defaults`); the checkpoint's shape check still guards every shape-defining field.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import ml_collections
from absl import logging
from jax.sharding import Mesh

from adc_jax import checkpointing, lm_files, multihost
from adc_jax import config as config_lib
from adc_jax import sharding as sharding_lib
from adc_jax import step as step_lib
from adc_jax.data import clip_store, lm_tokenizer, paths, registry
from adc_jax.data import vocab as vocab_lib
from adc_jax.data.errors import BadData, DataError
from adc_jax.data.eval_split import EvalSplit, load_eval_split
from adc_jax.data.synthetic.grammar import all_single_edit_captions
from adc_jax.data.tokenizer import Vocabulary
from adc_jax.metrics.baseline import most_frequent_caption
from adc_jax.models import tiny_gpt2
from adc_jax.train_state import TrainState

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes the resolved config to workdir/config.json (read back by evaluate and caption)."""
    path = os.path.join(workdir, CONFIG_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with, completed by `fill_config_defaults`.

    Raises FileNotFoundError with a hint when the workdir has no config.json, and
    `paths.RemotePathError` (a ValueError) for a remote workdir (gs://...), which would
    otherwise be read as a local folder named "gs:".
    """
    paths.require_local(workdir, "--workdir", paths.WORKDIR_WHY)
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: is {workdir} a training workdir? Train with "
            "python -m adc_jax.main --config=... --workdir=DIR first."
        )
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    fill_config_defaults(config)
    return config


def fill_config_defaults(config: ml_collections.ConfigDict) -> list[str]:
    """Adds the fields that `config` (read from an older config.json) lacks, with their defaults.

    The defaults are those of `base_config(config.size)`. Returns the dotted names of the fields
    that were added (and logs a warning naming them).
    """
    size = config.get("size", "paper")
    defaults = config_lib.base_config(size if size in config_lib.SIZES else "paper")
    added: list[str] = []

    def merge(
        default: ml_collections.ConfigDict, saved: ml_collections.ConfigDict, prefix: str
    ) -> None:
        for key, value in default.items():
            if key not in saved:
                saved[key] = value
                added.append(prefix + key)
            elif isinstance(value, ml_collections.ConfigDict) and isinstance(
                saved[key], ml_collections.ConfigDict
            ):
                merge(value, saved[key], f"{prefix}{key}.")

    merge(defaults, config, "")
    if added:
        logging.warning(
            "config.json predates %d config field(s); using today's defaults: %s",
            len(added),
            ", ".join(f"{k}={config_lib.get_field(config, k)!r}" for k in added),
        )
    return added


@dataclasses.dataclass
class RunData:
    """The dataset of a run and the vocabulary built from its training captions.

    builder: the tfds builder (read splits with `builder.as_data_source(split)`).
    vocab: the run's vocabulary (workdir/vocab.json).
    train_captions: every training caption of the run's tiers, in dataset order.
    train_stats: the training split's `vocab_lib.CaptionStats` (entries, per-tier captions).
    tiers: the caption tiers the run trains and scores on ((0,) unless ADIFF).
    """

    builder: object
    vocab: Vocabulary
    train_captions: list[str]
    train_stats: vocab_lib.CaptionStats
    tiers: tuple[int, ...] = (0,)

    def baseline_captions(self) -> dict[int, str]:
        """tier -> the most frequent training caption of that tier (the trivial baseline)."""
        return {
            tier: most_frequent_caption(self.train_stats.by_tier.get(tier) or self.train_captions)
            for tier in self.tiers
        }

    def eval_split(self, split: str, max_examples: int = 0) -> EvalSplit:
        """The entries of (the first max_examples pairs of) `split` for evaluation: their text
        from the split's caption file (`vocab_lib.split_captions`), their audio read from the
        records when batches are made."""
        return load_eval_split(
            clip_store.pair_source(self.builder, split),
            max_examples,
            self.tiers,
            vocab_lib.split_captions(self.builder, split),
        )


def prepare_data(config: ml_collections.ConfigDict, workdir: str) -> RunData:
    """Builds (on first use) or loads the dataset, and builds or loads the run's vocabulary."""
    # One process builds the dataset first, so a shared data_dir is never written twice at once.
    # Its data error is said on every process (the others would wait at a barrier forever).
    failure = None
    if jax.process_index() == 0:
        try:
            builder = registry.load_builder(config)
        except DataError as e:
            failure = e
    if multihost.first_process_says(failure is not None):  # every process waits here
        if failure is not None:
            raise failure
        raise BadData(
            f"Process 0 could not build the dataset {config.data.name}; its log says why."
        )
    if jax.process_index() != 0:
        builder = registry.load_builder(config)
    start = time.time()
    tiers = vocab_lib.split_tiers(config)
    punctuation = bool(config.data.punctuation_tokens)
    _, stats = vocab_lib.read_captions(
        vocab_lib.split_captions(builder, "train"), tiers, punctuation
    )
    logging.info(
        "Read %d training captions of %d pairs in %.1f s (%d pairs without captions).",
        stats.num_captions,
        stats.num_pairs,
        time.time() - start,
        stats.pairs_without_captions,
    )
    if not stats.num_captions and tiers != (0,):
        raise BadData(
            f"The training split of {config.data.name} has no caption of the selected tiers "
            f"{tiers}; check data.adiff_tiers against the CSVs in data.csv_dir."
        )
    vocab_path = os.path.join(workdir, VOCAB_FILE)
    if config.model.get("lm_path"):
        return RunData(
            builder, _lm_tokenizer(config, vocab_path, stats), stats.captions, stats, tiers
        )
    if os.path.exists(vocab_path):  # checked on every process, before the barrier below
        try:
            vocab_lib.check_vocab_file(
                vocab_path, punctuation=punctuation, extra_tokens=vocab_lib.tier_tokens(config)
            )
        except ValueError as e:  # the workdir was trained with other data settings
            raise config_lib.ConfigError(str(e)) from None

    # Process 0 writes the vocabulary (the workdir is shared); the others read it afterwards.
    def vocab() -> Vocabulary:
        return vocab_lib.build_or_load_vocab(
            vocab_path,
            stats.captions,
            config.data.vocab_min_count,
            config.data.max_caption_tokens,
            punctuation=punctuation,
            extra_tokens=vocab_lib.tier_tokens(config),
        )

    if jax.process_index() == 0:
        vocabulary = vocab()
    multihost.sync("vocab_written")
    if jax.process_index() != 0:
        vocabulary = vocab()
    return RunData(builder, vocabulary, stats.captions, stats, tiers)


def tiny_lm_corpus() -> list[str]:
    """The text a tiny random GPT-2's tokenizer is trained on: every single-edit caption of the
    synthetic grammar and the tier prompts (`adc_jax.models.tiny_gpt2`)."""
    captions = [c for cs in all_single_edit_captions().values() for c in cs]
    return captions + list(lm_tokenizer.TIER_PROMPTS.values()) * 20


def ensure_tiny_lm(config: ml_collections.ConfigDict) -> None:
    """Writes the random tiny GPT-2 that model.lm_path="tiny:<size>" names, if not there yet."""
    size = lm_files.tiny_size(config.model.get("lm_path", ""))
    if size is None:
        return
    directory = tiny_gpt2.lm_directory(config)
    if jax.process_index() == 0 and not os.path.isfile(
        os.path.join(directory, lm_files.CONFIG_FILE)
    ):
        tiny_gpt2.write_tiny_gpt2(directory, size, tiny_lm_corpus())
        logging.info("Wrote a random tiny GPT-2 (%s) to %s.", size, directory)
    multihost.sync("tiny_lm_written")


def _lm_tokenizer(
    config: ml_collections.ConfigDict, path: str, stats: vocab_lib.CaptionStats
) -> lm_tokenizer.LMTokenizer:
    """The run's LM tokenizer: workdir/vocab.json, or the LM's tokenizer.json saved there."""
    ensure_tiny_lm(config)
    tiers = lm_tokenizer.run_tiers(config)
    directory = tiny_gpt2.lm_directory(config)
    fresh = lm_tokenizer.LMTokenizer.from_directory(directory, tiers)
    if os.path.exists(path):  # checked on every process
        if not lm_tokenizer.is_saved_lm_tokenizer(path):
            raise ValueError(
                f"{path} is a word vocabulary, but this config uses the language model "
                f"{config.model.lm_path}; use a new workdir."
            )
        tok = lm_tokenizer.LMTokenizer.load(path)
        if tok.tokenizer_json != fresh.tokenizer_json or tok.tiers != fresh.tiers:
            raise ValueError(
                f"{path} holds another tokenizer or other tiers than model.lm_path="
                f"{config.model.lm_path!r} with tiers {tiers}; use a new workdir."
            )
    else:
        tok = fresh
        if jax.process_index() == 0:
            tok.save(path)
    multihost.sync("vocab_written")
    max_tokens = config.data.max_caption_tokens
    cut = sum(tok.encode(c, max_tokens)[1] for c in stats.captions)
    logging.info(
        "Vocabulary: the LM tokenizer of %s (%d ids, tiers %s); %d of %d training captions are "
        "longer than %d tokens and will be truncated (keeping <eos>).",
        directory,
        len(tok),
        list(tiers) or "none",
        cut,
        len(stats.captions),
        max_tokens,
    )
    return tok


def load_vocabulary(path: str) -> Vocabulary | lm_tokenizer.LMTokenizer:
    """A workdir's vocab.json: a word vocabulary or an LM tokenizer."""
    if lm_tokenizer.is_saved_lm_tokenizer(path):
        return lm_tokenizer.LMTokenizer.load(path)
    return Vocabulary.load(path)


@dataclasses.dataclass
class TrainedRun:
    """A checkpoint of a run, restored for inference.

    config: the run's config.json; vocab: its vocabulary; train_state: the restored model state
    placed on `mesh`; step: the checkpoint's step; workdir: the absolute workdir.
    """

    config: ml_collections.ConfigDict
    vocab: Vocabulary
    train_state: TrainState
    mesh: Mesh
    step: int
    workdir: str


def load_trained(workdir: str, step: int | None = None, mesh: Mesh | None = None) -> TrainedRun:
    """Restores checkpoint `step` (default: the latest) of the run in `workdir`.

    Raises:
      FileNotFoundError: no config, vocabulary or checkpoint (the message says what to do).
      adc_jax.config.ConfigError: the checkpoint does not match the saved config.
      adc_jax.checkpointing.CheckpointError: the checkpoint cannot be read.
    """
    paths.require_local(workdir, "--workdir", paths.WORKDIR_WHY)
    workdir = os.path.abspath(os.path.expanduser(workdir))
    config = read_config(workdir)
    # The BYOL-A initialisation is inside the checkpoint; its source file is not needed again.
    config.model.byola_init = ""
    vocab_path = os.path.join(workdir, VOCAB_FILE)
    if not os.path.exists(vocab_path):
        raise FileNotFoundError(
            f"{vocab_path} not found: the run in {workdir} never started "
            "training. Train it first with python -m adc_jax.main."
        )
    vocab = load_vocabulary(vocab_path)
    if config.model.get("lm_path"):  # the LM's weights are inside the checkpoint
        ensure_tiny_lm(config)
        config.model.lm_weights = False
    ckpt_dir = checkpointing.checkpoint_dir(workdir)
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(
            f"No checkpoints in {workdir} (expected {ckpt_dir}). Train first, "
            "or pass the workdir of a trained run."
        )
    checkpointer = checkpointing.Checkpointer(ckpt_dir, keep=None, async_save=False, create=False)
    try:
        steps = checkpointer.all_steps()
        if not steps:
            raise FileNotFoundError(
                f"No complete checkpoint in {ckpt_dir}. Train first, or pass the "
                "workdir of a trained run."
            )
        if step is None:
            step = max(steps)
        elif step not in steps:
            raise FileNotFoundError(
                f"No checkpoint for step {step} in {ckpt_dir}; available: {sorted(steps)}."
            )
        mesh = mesh or sharding_lib.create_mesh()
        ts = step_lib.create_train_state(config, len(vocab), mesh)
        ts.state, _, _ = checkpointer.restore(
            step, ts.state, checkpointing.run_meta(config, len(vocab))
        )
    finally:
        checkpointer.close()
    return TrainedRun(config, vocab, ts, mesh, step, workdir)
