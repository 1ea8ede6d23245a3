"""Default hyper-parameters, size presets and validation of adc_jax configs.

The experiment files under `configs/` call `base_config(size)` and override the few fields that
define their experiment (attention mode, SDD mode). Keeping the defaults inside the package means a
config file works from any working directory and from a notebook.

Sizes:
  "paper": the paper-scale model (10 s clips, BYOL-A d=2048, d_model 512) for GPUs/TPUs.
  "quick": the same mechanisms shrunk to train on 2 CPU cores in minutes.
  "smoke": seconds; used by the tests.

`validate(config)` checks every field a user can set and raises `ConfigError` naming the key, so a
bad value fails before anything is built or compiled.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import ml_collections

from adc_jax import config_checks as checks
from adc_jax import lm_files

# Also named through `adc_jax.config` by the modules that read a config.
from adc_jax.config_checks import (  # noqa: F401
    SIZES,
    ConfigError,
    get_field,
    min_clip_samples,
    parse_size,
)

ATTENTION_MODES = ("cross", "full")
SDD_MODES = ("none", "early", "late")
DATASETS = ("synthetic_adc", "audio_diff_caps", "adiff", "clip_pairs")
ADIFF_SUBSETS = ("acd", "cld")
ADIFF_TIERS = (1, 2, 3)
DECODE_MODES = ("greedy", "beam")
# The aac-metrics scores eval.extra_metrics may name (adc_jax.metrics.aac computes them).
EXTRA_METRICS = ("fense", "spider_fl", "clap_sim")
LM_CONDITIONINGS = ("prefix", "cross")


def default_data_dir() -> str:
    """Where datasets are cached unless `config.data.data_dir` says otherwise."""
    return os.environ.get("ADC_JAX_DATA_DIR", os.path.join("~", ".cache", "adc_jax", "datasets"))


def base_config(size: str = "paper") -> ml_collections.ConfigDict:
    """Returns the full default config (CAC encoder + late SDD) at the given size."""
    size = parse_size(size)
    c = ml_collections.ConfigDict()
    # Name of the experiment, written into logs and result tables.
    c.name = "late_sdd"
    # Size preset this config was built with (paper, quick or smoke); informational.
    c.size = size
    # Master seed: parameter init, dropout and the data order all derive from it.
    c.seed = 0

    # ---------------------------------------------------------------- data
    c.data = ml_collections.ConfigDict()
    # Dataset: "synthetic_adc" (built-in, generated on first use), "audio_diff_caps" (NTT's
    # release), "adiff" (ADIFF's ACD/CLD explanations over AudioCaps/Clotho audio) or
    # "clip_pairs" (AudioDiffCaps-style pairs mixed from the user's ESC-50/FSD50K recordings).
    c.data.name = "synthetic_adc"
    # Directory holding tfds datasets; "" means $ADC_JAX_DATA_DIR or ~/.cache/adc_jax/datasets.
    c.data.data_dir = ""
    # Audio sample rate in Hz; BYOL-A's front end expects 16 kHz.
    c.data.sample_rate = 16000
    # Length in seconds that every clip is padded or cropped to.
    c.data.clip_seconds = 10.0
    # Synthetic data: number of training pairs (AudioDiffCaps has about 6,000).
    c.data.num_train = 6000
    # Synthetic data: number of validation pairs.
    c.data.num_validation = 300
    # Synthetic data: number of evaluation pairs.
    c.data.num_eval = 600
    # Synthetic data: seed of the generator (the data, not the training run).
    c.data.synth_seed = 0
    # synthetic_adc and clip_pairs: share of pairs without a difference (clip 2 re-renders clip 1
    # below every edit's threshold, captioned "there is no difference" ...), in [0, 1). 0 by
    # default: at :quick, 0.1 taught only "no event -> no difference" (results/diagnostics_quick).
    c.data.no_change_fraction = 0.0
    # AudioDiffCaps: directory of the WAV files named in the CSVs' s1_fn/s2_fn columns.
    # ADIFF: the directory the CSVs' filepath1/filepath2 columns are relative to.
    c.data.audio_dir = ""
    # AudioDiffCaps: directory holding adc_{rain,traffic}/{dev,eval}/adc_*_{dev,eval}.csv.
    # ADIFF: directory holding the {acd,cld}_<split>_adiff_<tier>_answer.csv files.
    c.data.csv_dir = ""
    # ADIFF: "acd" (AudioCaps pairs, 10 s clips) or "cld" (Clotho v2.1 pairs, 15-30 s clips).
    c.data.adiff_subset = "acd"
    # ADIFF: comma-separated explanation tiers to train and score on, from "1" (few words),
    # "2" (a sentence), "3" (in detail); with several, the decoder starts from a tier token.
    c.data.adiff_tiers = "1"
    # clip_pairs: foreground recordings in ESC-50's layout (meta/esc50.csv + audio/), FSD50K's
    # (FSD50K.ground_truth/*.csv + FSD50K.*_audio/) or one sub-folder per class.
    c.data.clips_dir = ""
    # clip_pairs: background recordings, in the same layouts ("" = the same as data.clips_dir).
    c.data.background_dir = ""
    # clip_pairs: comma-separated foreground class labels as the data names them ("" = the
    # AudioDiffCaps classes: dog, footsteps, church bells, thunderstorm, car horn, chirping birds).
    c.data.clip_classes = ""
    # clip_pairs: comma-separated background class labels ("" = rain, car passing).
    c.data.background_classes = ""
    # Real data: a clip shorter than this fraction of the dataset's nominal clip length fails
    # the build naming the file (0 = never fail; such clips and truncated files are counted
    # and logged as a warning either way).
    c.data.min_clip_fraction = 0.0
    # AudioDiffCaps: fraction of the dev set held out (deterministically) as the validation split.
    c.data.validation_fraction = 0.05
    # Maximum caption length in tokens, <bos> and <eos> included.
    c.data.max_caption_tokens = 32
    # Words seen fewer times than this in the training captions map to <unk>.
    c.data.vocab_min_count = 1
    # Keep "," "." ";" ":" "!" "?" as tokens (long explanations stay readable); scoring strips
    # them either way. False drops punctuation, as the built-in data's runs always have.
    c.data.punctuation_tokens = False
    # Comma-separated caption lengths in tokens to bucket training batches by (each batch padded
    # to the smallest bucket its captions fit, one compilation per bucket); "" = one length,
    # data.max_caption_tokens. The largest bucket must equal data.max_caption_tokens.
    c.data.token_buckets = ""
    # Number of grain worker processes for the training pipeline (0 = in the main process).
    c.data.num_workers = 0
    # Number of batches prepared ahead of the device (host-side prefetch).
    c.data.prefetch = 2

    # ---------------------------------------------------------------- model
    c.model = ml_collections.ConfigDict()
    # Compute dtype: "float32" or "bfloat16" (params, optimizer state and losses stay float32).
    c.model.dtype = "float32"
    # Front end: FFT size in samples.
    c.model.n_fft = 1024
    # Front end: window length in samples (periodic Hann).
    c.model.win_length = 1024
    # Front end: hop length in samples (10 ms at 16 kHz).
    c.model.hop_length = 160
    # Front end: number of mel bins.
    c.model.n_mels = 64
    # Front end: lowest mel frequency in Hz.
    c.model.f_min = 60.0
    # Front end: highest mel frequency in Hz.
    c.model.f_max = 7800.0
    # Front end: mean of the log-mel used for normalisation (BYOL-A's published statistics).
    c.model.norm_mean = -5.4919195
    # Front end: standard deviation of the log-mel used for normalisation.
    c.model.norm_std = 5.0389895
    # BYOL-A CNN: channels of each of the three conv blocks (64 in BYOL-A).
    c.model.byola_channels = 64
    # BYOL-A: output feature size d of the frame embedding (512, 1024 or 2048 in BYOL-A).
    c.model.byola_dim = 2048
    # BYOL-A: dropout rate inside the MLP head.
    c.model.byola_dropout = 0.3
    # BYOL-A: directory written by tools/convert_byola.py to initialise from; "" = random init.
    c.model.byola_init = ""
    # With model.byola_init: take the log-mel normalisation (norm_mean, norm_std) from the
    # weights' meta.json when it records one (adc_jax.pretrain does; converted official weights
    # do not, and keep the statistics above), so the encoder sees inputs scaled as in pretraining.
    c.model.byola_init_norm = True
    # BYOL-A: keep the CNN and head fixed during training.
    c.model.byola_freeze = False
    # BYOL-A: learning-rate multiplier for the BYOL-A parameters when fine-tuning.
    c.model.byola_lr_scale = 1.0
    # BYOL-A: how conv block 1 is computed, same function and parameters either way: "conv"
    # (direct convolution), "phases" (one matmul over the 2x2 pooling phases), or "auto"
    # ("phases" on CPU, where it was measured faster; "conv" on GPU/TPU until measured there).
    c.model.byola_first_block = "auto"
    # Transformer width (encoder and decoder).
    c.model.d_model = 512
    # Attention heads (encoder and decoder).
    c.model.num_heads = 8
    # Feed-forward hidden size (GELU).
    c.model.d_ff = 2048
    # Number of difference-encoder layers.
    c.model.encoder_layers = 2
    # Number of text-decoder layers.
    c.model.decoder_layers = 2
    # Dropout rate in the transformer layers.
    c.model.dropout = 0.1
    # Encoder attention: "cross" (CAC: a frame attends only to the other clip) or "full".
    c.model.attention = "cross"
    # Similarity-discrepancy disentanglement: "none", "early" (encoder input) or "late" (output).
    c.model.sdd = "late"
    # SDD: number of channels of the "similar" part; the rest of d_model is "discrepant".
    c.model.sdd_similar_dim = 256
    # SDD: LSTM units per direction of each embedding net.
    c.model.sdd_lstm_units = 128
    # SDD: InfoNCE temperature.
    c.model.sdd_temperature = 0.07
    # SDD: weight lambda of L_SDD in the total loss.
    c.model.sdd_weight = 1.0
    # Maximum number of positions of the text decoder (= data.max_caption_tokens).
    c.model.max_decode_len = 32
    # Label smoothing of the caption cross-entropy.
    c.model.label_smoothing = 0.0
    # Recompute activations of the CNN in the backward pass to save memory.
    c.model.remat_cnn = False
    # Language decoder: "" = the paper's 2-layer decoder trained from scratch on a word
    # vocabulary; a directory holding a Hugging Face GPT-2 (config.json, model.safetensors,
    # tokenizer.json) = that LM writes the captions, tokenised by its own tokenizer; "tiny:smoke"
    # or "tiny:quick" = a random tiny GPT-2 written under the data directory on first use.
    c.model.lm_path = ""
    # LM: how the audio reaches it: "prefix" (ADIFF: lm_prefix_len pooled embeddings in front of
    # the text) or "cross" (zero-gated cross-attention sub-layers in every block).
    c.model.lm_conditioning = "prefix"
    # LM: number of audio prefix embeddings ("prefix"; ADIFF uses 40).
    c.model.lm_prefix_len = 40
    # LM: load model.safetensors at init (False: the same architecture, randomly initialised).
    c.model.lm_weights = True
    # LM: keep the pretrained LM's parameters fixed (the prefix/cross layers still train).
    c.model.lm_freeze = False
    # LM: learning-rate multiplier for the pretrained LM's parameters when fine-tuning.
    c.model.lm_lr_scale = 1.0
    # LM: shard its matrices and their optimizer state over the "data" axis (FSDP) instead of
    # replicating them; for GPT-2 sizes whose Adam state does not fit each device.
    c.model.lm_fsdp = False

    # ---------------------------------------------------------------- train
    c.train = ml_collections.ConfigDict()
    # Global batch size in pairs, summed over all devices and hosts.
    c.train.batch_size = 32
    # Number of optimiser steps.
    c.train.num_steps = 20000
    # Peak learning rate of AdamW.
    c.train.learning_rate = 1e-4
    # Linear warm-up steps before the cosine decay.
    c.train.warmup_steps = 1000
    # Final learning rate as a fraction of the peak.
    c.train.final_lr_fraction = 0.01
    # AdamW weight decay.
    c.train.weight_decay = 0.01
    # Global gradient-norm clipping threshold.
    c.train.grad_clip = 1.0
    # Log metrics every this many steps.
    c.train.log_every = 50
    # Save a checkpoint every this many steps (and at the end).
    c.train.checkpoint_every = 1000
    # Number of most recent checkpoints kept.
    c.train.keep_checkpoints = 3
    # Evaluate every this many steps (and at the end); 0 = only at the end.
    c.train.eval_every = 5000
    # On a NaN/Inf loss or gradient: "stop" (keep the last good checkpoint) or "skip" the update.
    c.train.nonfinite = "stop"

    # ---------------------------------------------------------------- eval
    c.eval = ml_collections.ConfigDict()
    # Split scored during and after training.
    c.eval.split = "eval"
    # Eval batch size in pairs (global).
    c.eval.batch_size = 32
    # Decoding: "greedy" or "beam".
    c.eval.decode = "beam"
    # Beam size of beam search.
    c.eval.beam_size = 4
    # Length penalty alpha of beam search (GNMT style; 0 = none).
    c.eval.length_penalty = 0.6
    # Evaluate on at most this many pairs (0 = the whole split).
    c.eval.max_examples = 0
    # Number of sample predictions written beside their references.
    c.eval.num_samples = 50
    # Diagnostics: also decode every pair swapped and as (clip 1, clip 1) for swap consistency
    # and the identical-pair rate (adc_jax.metrics.diagnostics; about 3x the decoding time).
    c.eval.diagnostics = True
    # Comma-separated aac-metrics scores to add: of EXTRA_METRICS ("" = none; needs
    # pip install -e '.[aac]' and aac-metrics-download, else they are null with a note).
    c.eval.extra_metrics = ""

    _apply_size(c, size)
    return c


def _apply_size(c: ml_collections.ConfigDict, size: str) -> None:
    """Shrinks the paper-scale defaults for CPU runs; every mechanism stays switched on."""
    if size == "quick":
        c.data.clip_seconds = 4.0
        c.data.num_train = 3000
        c.data.num_validation = 100
        c.data.num_eval = 200
        c.model.byola_channels = 16
        c.model.byola_dim = 256
        c.model.d_model = 128
        c.model.num_heads = 4
        c.model.d_ff = 512
        c.model.sdd_similar_dim = 64
        c.model.sdd_lstm_units = 32
        c.model.dropout = 0.1
        c.train.batch_size = 32
        c.train.num_steps = 800
        c.train.learning_rate = 1e-3
        c.train.warmup_steps = 100
        c.train.log_every = 25
        c.train.checkpoint_every = 200
        c.train.eval_every = 0
        c.eval.decode = "greedy"
        c.eval.batch_size = 50
    elif size == "smoke":
        c.data.clip_seconds = 1.0
        c.data.num_train = 32
        c.data.num_validation = 8
        c.data.num_eval = 8
        c.model.byola_channels = 8
        c.model.byola_dim = 32
        c.model.d_model = 32
        c.model.num_heads = 2
        c.model.d_ff = 64
        c.model.encoder_layers = 1
        c.model.decoder_layers = 1
        c.model.sdd_similar_dim = 16
        c.model.sdd_lstm_units = 8
        c.train.batch_size = 8
        c.train.num_steps = 6
        c.train.learning_rate = 1e-3
        c.train.warmup_steps = 2
        c.train.log_every = 2
        c.train.checkpoint_every = 3
        c.train.eval_every = 0
        c.eval.batch_size = 8
        c.eval.decode = "greedy"
        c.eval.beam_size = 2
        c.eval.num_samples = 4


def experiment_config(
    arg: str | None, *, name: str, attention: str, sdd: str
) -> ml_collections.ConfigDict:
    """Builds one experiment of the paper's ablation at the size given by `arg`."""
    c = base_config(parse_size(arg))
    c.name = name
    c.model.attention = attention
    c.model.sdd = sdd
    return c


# ------------------------------------------------------------------------------------ validation


def parse_tiers(text: str) -> tuple[int, ...] | None:
    """'1,3' -> (1, 3): distinct ADIFF tiers in increasing order; None if malformed or empty."""
    try:
        tiers = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        return None
    return tuple(tiers) if tiers and set(tiers) <= set(ADIFF_TIERS) else None


def parse_buckets(text: str) -> tuple[int, ...] | None:
    """'64,128,320' -> (64, 128, 320); '' -> (); None if malformed, not increasing or < 3."""
    if not text.strip():
        return ()
    try:
        buckets = tuple(int(t) for t in text.split(","))
    except ValueError:
        return None
    ok = all(b >= 3 for b in buckets) and all(
        a < b for a, b in zip(buckets, buckets[1:], strict=False)
    )
    return buckets if ok else None


# The files of a converted BYOL-A directory (`config.model.byola_init`), written by
# tools/convert_byola.py: the arrays, and their shapes (n_mels, channels, dim) and source.
BYOLA_PARAMS_FILE = "params.npz"
BYOLA_META_FILE = "meta.json"
# meta.json field -> the config field it must equal.
_BYOLA_META_FIELDS = {
    "n_mels": "model.n_mels",
    "channels": "model.byola_channels",
    "dim": "model.byola_dim",
}


def _check_byola_init(c: ml_collections.ConfigDict) -> None:
    """model.byola_init must be converted weights whose shapes (its meta.json) fit the model."""
    value = c.model.byola_init
    convert = "tools/convert_byola.py --input FILE.pth --output DIR"
    path = os.path.expanduser(value)
    checks.check(
        os.path.exists(path), "model.byola_init", value, f"does not exist; write it with {convert}."
    )
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    params_path = os.path.join(folder, BYOLA_PARAMS_FILE)
    meta_path = os.path.join(folder, BYOLA_META_FILE)
    checks.check(
        os.path.isfile(params_path),
        "model.byola_init",
        value,
        f"holds no {BYOLA_PARAMS_FILE}; write the directory with {convert}.",
    )
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:  # ValueError: not JSON, not UTF-8
        raise ConfigError(
            f"config.model.byola_init={value!r} is invalid: cannot read {meta_path} ({e}). It is "
            f"written beside the weights; re-run {convert}."
        ) from e
    lacking = [
        k for k in _BYOLA_META_FIELDS if not isinstance(meta, dict) or type(meta.get(k)) is not int
    ]
    checks.check(
        not lacking,
        "model.byola_init",
        value,
        f"{meta_path} lacks the integer field(s) {', '.join(lacking)}; re-run {convert}.",
    )
    wrong = [
        (key, meta[k], checks.get_field(c, key))
        for k, key in _BYOLA_META_FIELDS.items()
        if meta[k] != checks.get_field(c, key)
    ]
    if wrong:
        raise ConfigError(
            f"config.model.byola_init={value!r} holds BYOL-A weights of another shape than the "
            "config's: "
            + "; ".join(
                f"{key} is {got} in {meta_path} but {want} in the config"
                for key, got, want in wrong
            )
            + ". To use these weights, set "
            + " ".join(f"--config.{key}={got}" for key, got, _ in wrong)
            + " (or convert weights of the configured shape)."
        )


def apply_byola_init_norm(c: ml_collections.ConfigDict) -> bool:
    """Sets model.norm_mean/norm_std from model.byola_init's meta.json (see byola_init_norm).

    Returns whether they were set. Does nothing without byola_init, with byola_init_norm False,
    or when the meta.json is missing or has no statistics (validate reports a bad directory).
    """
    m = c.model
    if not m.get("byola_init") or not m.get("byola_init_norm", True):
        return False
    path = os.path.expanduser(m.byola_init)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    try:
        with open(os.path.join(folder, BYOLA_META_FILE)) as f:
            meta = json.load(f)
        mean, std = float(meta["norm_mean"]), float(meta["norm_std"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    m.norm_mean, m.norm_std = mean, std
    return True


def _check_lm(c: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
    """The LM decoder's fields: a usable GPT-2 directory (or tiny:<size>) and its settings."""
    m = c.model
    checks.check(isinstance(m.lm_path, str), "model.lm_path", m.lm_path, "must be a string.")
    if not m.lm_path:
        return
    checks.choice(c, "model.lm_conditioning", LM_CONDITIONINGS)
    checks.positive_int(c, "model.lm_prefix_len")
    checks.boolean(c, "model.lm_weights")
    checks.boolean(c, "model.lm_freeze")
    checks.in_range(c, "model.lm_lr_scale", 0.0, math.inf, hi_open=True)
    checks.boolean(c, "model.lm_fsdp")
    checks.check(
        m.label_smoothing == 0,
        "model.label_smoothing",
        m.label_smoothing,
        "must be 0 with model.lm_path: the smoothed target would spread over the ids the LM "
        "decoder masks (<pad>, <bos>, tier tokens).",
    )
    size = lm_files.tiny_size(m.lm_path)
    if size is not None:
        checks.check(
            size in lm_files.TINY_SIZES,
            "model.lm_path",
            m.lm_path,
            f"names no tiny GPT-2; use one of {', '.join('tiny:' + s for s in lm_files.TINY_SIZES)}"
            " or a GPT-2 directory.",
        )
        return
    try:
        lm = lm_files.check_lm_directory(m.lm_path)
    except lm_files.LMFilesError as e:
        raise ConfigError(f"config.model.lm_path={m.lm_path!r} is invalid: {e}") from e
    if m.lm_fsdp and num_devices:
        checks.check(
            lm["n_embd"] % num_devices == 0,
            "model.lm_fsdp",
            m.lm_fsdp,
            f"shards the LM's width n_embd={lm['n_embd']} over {num_devices} devices, which "
            "does not divide it.",
        )
    prefix = m.lm_prefix_len if m.lm_conditioning == "prefix" else 0
    checks.check(
        prefix + m.max_decode_len <= lm["n_positions"],
        "model.max_decode_len",
        m.max_decode_len,
        f"with {prefix} prefix embeddings (and the tier prompts) exceeds the LM's "
        f"n_positions={lm['n_positions']}.",
    )


def validate(c: ml_collections.ConfigDict, *, num_devices: int | None = None) -> None:
    """Raises ConfigError naming the first field whose value cannot work.

    Args:
      c: a config from `configs/*.py`, with command-line overrides applied.
      num_devices: global device count; when given, batch sizes must divide by it.
    """
    checks.choice(c, "data.name", DATASETS)
    checks.check_clip(c)
    if c.data.name in ("synthetic_adc", "clip_pairs"):
        for key in ("data.num_train", "data.num_validation", "data.num_eval"):
            checks.positive_int(c, key)
        checks.non_negative_int(c, "data.synth_seed")
    fraction = checks.get_field(c, "data.no_change_fraction")
    checks.check(
        isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 <= fraction < 1,
        "data.no_change_fraction",
        fraction,
        "must be a number in [0, 1): the share of pairs without a difference.",
    )
    checks.check(
        fraction == 0 or c.data.name in ("synthetic_adc", "clip_pairs"),
        "data.no_change_fraction",
        fraction,
        f"only the generated datasets (synthetic_adc, clip_pairs) make pairs without a "
        f"difference; set it to 0 for data.name={c.data.name!r}.",
    )
    needed_for = f"when data.name is {c.data.name!r}"
    if c.data.name == "clip_pairs":
        checks.existing_directory(
            c, "data.clips_dir", needed_for, "your ESC-50, FSD50K or folder-per-class copy"
        )
        if c.data.background_dir:
            checks.existing_directory(
                c, "data.background_dir", needed_for, "your background recordings"
            )
        for key in ("data.clip_classes", "data.background_classes"):
            value = checks.get_field(c, key)
            checks.check(isinstance(value, str), key, value, "must be a string.")
    elif c.data.name in ("audio_diff_caps", "adiff"):
        what = "your AudioDiffCaps copy" if c.data.name == "audio_diff_caps" else "your ADIFF copy"
        checks.existing_directory(c, "data.audio_dir", needed_for, what)
        checks.existing_directory(c, "data.csv_dir", needed_for, what)
    if c.data.name == "adiff":
        checks.choice(c, "data.adiff_subset", ADIFF_SUBSETS)
        tiers = c.data.adiff_tiers
        checks.check(
            isinstance(tiers, str) and parse_tiers(tiers) is not None,
            "data.adiff_tiers",
            tiers,
            "must list tiers from 1, 2, 3 separated by commas, e.g. '1' or '1,2,3'.",
        )
    checks.in_range(c, "data.min_clip_fraction", 0.0, 1.0)
    checks.boolean(c, "data.punctuation_tokens")
    buckets = parse_buckets(c.data.token_buckets) if isinstance(c.data.token_buckets, str) else None
    checks.check(
        buckets is not None and (not buckets or buckets[-1] == c.data.max_caption_tokens),
        "data.token_buckets",
        c.data.token_buckets,
        "must be '' or increasing token lengths >= 3 separated by commas, the last equal to "
        f"data.max_caption_tokens={c.data.max_caption_tokens}, e.g. '64,128,"
        f"{c.data.max_caption_tokens}'.",
    )
    checks.in_range(c, "data.validation_fraction", 0.0, 1.0, hi_open=True)
    checks.check(
        isinstance(c.data.max_caption_tokens, int) and c.data.max_caption_tokens >= 3,
        "data.max_caption_tokens",
        c.data.max_caption_tokens,
        "must be an integer >= 3 (<bos>, one word, <eos>).",
    )
    checks.positive_int(c, "data.vocab_min_count")
    checks.non_negative_int(c, "data.num_workers")
    checks.non_negative_int(c, "data.prefetch")

    m = c.model
    checks.check_encoder(c)
    checks.choice(c, "model.attention", ATTENTION_MODES)
    checks.choice(c, "model.sdd", SDD_MODES)
    for key in (
        "model.d_model",
        "model.num_heads",
        "model.d_ff",
        "model.encoder_layers",
        "model.decoder_layers",
        "model.sdd_lstm_units",
        "model.max_decode_len",
    ):
        checks.positive_int(c, key)
    checks.check(
        m.d_model % m.num_heads == 0,
        "model.num_heads",
        m.num_heads,
        f"must divide model.d_model={m.d_model}.",
    )
    checks.check(
        checks.is_int(m.sdd_similar_dim) and 0 < m.sdd_similar_dim < m.d_model,
        "model.sdd_similar_dim",
        m.sdd_similar_dim,
        f"must be an integer in [1, model.d_model-1={m.d_model - 1}] so both parts are non-empty.",
    )
    checks.in_range(c, "model.sdd_temperature", 0.0, math.inf, lo_open=True, hi_open=True)
    checks.in_range(c, "model.sdd_weight", 0.0, math.inf, hi_open=True)
    checks.in_range(c, "model.dropout", 0.0, 1.0, hi_open=True)
    checks.in_range(c, "model.byola_lr_scale", 0.0, math.inf, hi_open=True)
    checks.in_range(c, "model.label_smoothing", 0.0, 1.0, hi_open=True)
    checks.check(
        m.max_decode_len >= c.data.max_caption_tokens,
        "model.max_decode_len",
        m.max_decode_len,
        f"must be >= data.max_caption_tokens={c.data.max_caption_tokens}.",
    )
    if m.byola_init:
        _check_byola_init(c)
    _check_lm(c, num_devices)

    checks.check_optimizer(c, clipping_optional=False)
    checks.non_negative_int(c, "train.eval_every")
    if m.sdd != "none":
        checks.check(
            c.train.batch_size >= 2,
            "train.batch_size",
            c.train.batch_size,
            "InfoNCE needs at least 2 pairs per batch when model.sdd is not 'none'.",
        )

    checks.choice(c, "eval.split", ("train", "validation", "eval"))
    checks.positive_int(c, "eval.batch_size")
    checks.choice(c, "eval.decode", DECODE_MODES)
    checks.positive_int(c, "eval.beam_size")
    if checks.has_field(c, "eval.diagnostics"):
        value = checks.get_field(c, "eval.diagnostics")
        checks.check(isinstance(value, bool), "eval.diagnostics", value, "must be True or False.")
    if checks.has_field(c, "eval.extra_metrics"):
        value = checks.get_field(c, "eval.extra_metrics")
        names = [n.strip() for n in str(value).split(",") if n.strip()]
        unknown = [n for n in names if n not in EXTRA_METRICS]
        checks.check(
            isinstance(value, str) and not unknown,
            "eval.extra_metrics",
            value,
            f"give a comma-separated subset of {', '.join(EXTRA_METRICS)} ('' for none).",
        )
    checks.in_range(c, "eval.length_penalty", 0.0, 10.0)
    checks.non_negative_int(c, "eval.max_examples")
    checks.non_negative_int(c, "eval.num_samples")
    checks.check_batch_divides(c, ("train.batch_size", "eval.batch_size"), num_devices)


def model_fields(c: ml_collections.ConfigDict) -> dict[str, Any]:
    """The fields that determine parameter shapes (compared when restoring a checkpoint)."""
    keys = (
        "n_mels",
        "byola_channels",
        "byola_dim",
        "d_model",
        "num_heads",
        "d_ff",
        "encoder_layers",
        "decoder_layers",
        "sdd",
        "sdd_similar_dim",
        "sdd_lstm_units",
        "max_decode_len",
    )
    fields = {f"model.{k}": c.model[k] for k in keys}
    if c.model.get("lm_path"):  # absent from older runs' config.json: the word decoder
        for k in ("lm_path", "lm_conditioning", "lm_prefix_len"):
            fields[f"model.{k}"] = c.model[k]
    return fields
