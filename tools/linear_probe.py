"""Linear-probe accuracy of frozen AudioNTT2020 encoders: what BYOL-A pretraining bought.

  python tools/linear_probe.py --encoder=W/encoder [--official=byola_d2048] [--seeds=0,1]
  python tools/linear_probe.py --encoder=W0/encoder,W1/encoder --data_dir=/path/to/ESC-50-master
  python tools/linear_probe.py --encoder=W/encoder --supervised=S/encoder   # with the reference

Rows of the table, one per encoder:
  pretrained   --encoder: directories in `tools/convert_byola.py`'s format (params.npz +
               meta.json), e.g. `adc_jax.pretrain`'s W/encoder; several (comma-separated, e.g.
               two pretraining seeds) give one row with their mean.
  official     --official: converted official BYOL-A weights, when you have them.
  supervised   --supervised: the same encoder trained with the pretraining clips' labels
               (`tools/supervised_reference.py`'s W/encoder): what pretraining could approach.
  random init  the same architecture (n_mels, channels, dim from each directory's meta.json;
               --n_mels/--channels/--dim when no directory is given) at random initialisation,
               fed the same normalised log-mel as that directory's encoder (--norm_mean/
               --norm_std without one), one per seed of --seeds, and their mean.
Each row prints the held-out accuracy, the values it is the mean of, the train/test clip counts
and the seconds it took (embedding + probe). Under the table, each row of several values (e.g.
three pretraining seeds) is compared with the random-init row of its shape: the difference of the
means in points with Welch's 95% interval and t-test over the values (`tools/ablation.py`'s
`welch_difference`); --json_out stores it as `vs_random_init`. With a held-out side of ~100 clips
one run's accuracy moves by several points between seeds, so give both sides several.

Embedding (as BYOL-A evaluates): each clip's normalised log-mel (adc_jax's front end; the
normalisation statistics of the directory's meta.json when it stores them, else BYOL-A's
published ones) through the encoder in inference mode (BatchNorm running statistics, no
dropout) -> frame features [T', d] -> max over time + mean over time (over the clip's valid
frames) -> [d].

Probe: multinomial logistic regression on the embeddings, standardised with the training
clips' mean and standard deviation, minimising the mean cross-entropy + l2 / 2 * |W|^2 (bias
not penalised) with full-batch L-BFGS (optax) to a gradient norm below 1e-4 (at most 1,000
iterations). l2 is chosen from L2_GRID by 3-fold cross-validation on the training clips
(stratified, seeded), then the probe is refit on all of them and scored on the test clips.

Labelled sets:
  built-in (default)  single-event scenes from the synthesiser (`adc_jax.data.synthetic.sounds`), made
                      hard enough that a random-init encoder scores below 70%: one event of one
                      of the 10 classes of `adc_jax.data.synthetic.grammar.EVENT_CLASSES` (the label)
                      over a rain or traffic background at -30 +- 3 dBFS, at a
                      signal-to-background ratio drawn from U(-12, -3) dB (the event part's
                      active RMS, `sounds.active_rms`, over the background's RMS), the event a 1 s
                      crop at a random offset of one of 4 instances of its class (an instance:
                      its own seed and character, i.e. pitch/pace/brightness, 3-5 s long). Train
                      and test draw their own instances, so the probe must generalise to sounds
                      of a class it has not seen, not recognise the training ones. Classes are
                      balanced (clip i has class i mod 10); clip i of split s comes from
                      default_rng([--probe_seed, 7001, s, i]), so the set is the same on every
                      machine and none of the pretraining clips. --train_per_class /
                      --test_per_class set its size (100 / 50). Easier variants (SNR -6..+3 dB,
                      or a new instance per clip) gave a random-init encoder 83-91%: random
                      convolutional features already separate the synthetic classes' spectra.
  --data_dir=DIR      ESC-50 (meta/esc50.csv + audio/: folds 1-4 train, fold 5 test) or one
                      sub-folder per class (`adc_jax.data.clip_sources`: 20% of each class's
                      files by the hash of their path test, the rest train). Clips are cropped
                      or zero-padded to --clip_seconds (default 5, ESC-50's length) and
                      pooled over their valid frames only.

Measured on the 2-core AMD EPYC (shared with other jobs, so the times are upper bounds), default
set (1,000 train / 500 test clips), random init, seeds 0 and 1, at the pretraining :quick shape
(64 mels x 16 channels, d = 256): 66.8% and 70.8%, mean 68.8%, with BYOL-A's published log-mel
statistics; 70.2% and 67.2%, mean 68.7%, with those of the captioner's synthetic clips (mean
0.149, std 2.445); 70.4% and 67.6%, mean 69.0%, with those a default :quick pretraining estimates
on its 6,000 synthetic_events clips (mean 0.079, std 2.109); 15-18 s for both seeds, 35-46 s with
the set's synthesis and compilation. At BYOL-A's published shape (64 channels, d = 2048): 78.0%
and 77.6%, mean 77.8% (161 s): more random features separate more.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import optax.tree_utils as otu  # noqa: E402
from ablation import Difference, welch_difference  # noqa: E402  (tools/ablation.py)
from flax import nnx  # noqa: E402

from adc_jax.config import BYOLA_META_FILE  # noqa: E402
from adc_jax.data import clip_sources  # noqa: E402
from adc_jax.data.audio_io import load_audio  # noqa: E402
from adc_jax.data.synthetic.grammar import EVENT_CLASSES  # noqa: E402
from adc_jax.data.synthetic.scenes import single_event_clip  # noqa: E402
from adc_jax.data.synthetic.sounds import synthesize_event  # noqa: E402
from adc_jax.data.waveform import fit_length  # noqa: E402
from adc_jax.models import byola  # noqa: E402
from adc_jax.models.frontend import log_mel, num_frames  # noqa: E402

SAMPLE_RATE = 16000
HOP_LENGTH = 160
# BYOL-A's published log-mel statistics (`config.model.norm_mean` / `norm_std`).
NORM_MEAN, NORM_STD = -5.4919195, 5.0389895
# The built-in set: signal-to-background ratio (dB), length of an event instance (s), crop (s),
# instances of each class per split (train and test never share one).
SNR_DB = (-12.0, -3.0)
EVENT_SECONDS = (3.0, 5.0)
CLIP_SECONDS = 1.0
INSTANCES_PER_CLASS = 4
# Tag in the built-in set's seeds, so its clips are none of the pretraining data's.
PROBE_TAG = 7001
PROBE_SPLITS = ("train", "test")
# Name of the random-init rows (the reference the others are compared with).
RANDOM_INIT = "random init"
# Probe: candidate L2 strengths, cross-validation folds, L-BFGS stopping rule.
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
CV_FOLDS = 3
MAX_ITERATIONS = 1000
GRAD_TOL = 1e-4
# Clips per encoder call.
EMBED_BATCH = 64


# ---------------------------------------------------------------------------- labelled sets


@dataclasses.dataclass
class LabelledSet:
    """Clips with class labels, per split ("train", "test").

    wavs[s]: [n, N] float32 in [-1, 1]; lengths[s]: [n] int32 valid samples; labels[s]: [n]
    int32 indices into classes; name: for the table.
    """

    name: str
    classes: tuple[str, ...]
    wavs: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]

    def size(self, split: str) -> int:
        return int(self.labels[split].shape[0])


def probe_clip(
    split: str,
    index: int,
    *,
    seed: int = 0,
    clip_seconds: float = CLIP_SECONDS,
    instances_per_class: int = INSTANCES_PER_CLASS,
) -> dict[str, np.ndarray | int | float | str]:
    """Clip `index` of a split of the built-in probe set (see the module docstring).

    Returns:
      dict with wav [N] float32 (= event + background), event and background [N] float32 (the
      two parts as mixed), label (int, index into EVENT_CLASSES), snr_db (float), scene (str).
    """
    split_id = PROBE_SPLITS.index(split)
    rng = np.random.default_rng([seed, PROBE_TAG, split_id, index])
    label = index % len(EVENT_CLASSES)
    instance = (index // len(EVENT_CLASSES)) % instances_per_class
    # The instance: its own generator, so every clip of it is the same sound (other crops).
    irng = np.random.default_rng([seed, PROBE_TAG, split_id, len(PROBE_SPLITS), label, instance])
    event_seed, character = int(irng.integers(2**62)), float(irng.random())
    duration = max(float(irng.uniform(*EVENT_SECONDS)), clip_seconds)
    event = synthesize_event(EVENT_CLASSES[label], event_seed, character, duration, SAMPLE_RATE)
    clip = single_event_clip(rng, event, clip_seconds, SNR_DB, SAMPLE_RATE)
    return dict(clip, label=label)


def builtin_probe_set(
    train_per_class: int = 100,
    test_per_class: int = 50,
    *,
    seed: int = 0,
    clip_seconds: float = CLIP_SECONDS,
    instances_per_class: int = INSTANCES_PER_CLASS,
) -> LabelledSet:
    """The built-in labelled set: train_per_class / test_per_class clips of each of 10 classes."""
    sizes = {"train": train_per_class, "test": test_per_class}
    wavs, lengths, labels = {}, {}, {}
    for split, per_class in sizes.items():
        clips = [
            probe_clip(
                split,
                i,
                seed=seed,
                clip_seconds=clip_seconds,
                instances_per_class=instances_per_class,
            )
            for i in range(per_class * len(EVENT_CLASSES))
        ]
        wavs[split] = np.stack([c["wav"] for c in clips])
        lengths[split] = np.full(len(clips), wavs[split].shape[1], np.int32)
        labels[split] = np.asarray([c["label"] for c in clips], np.int32)
    return LabelledSet(
        f"built-in single-event scenes (SNR {SNR_DB[0]:g}..{SNR_DB[1]:+g} dB, "
        f"{clip_seconds:g} s crops, seed {seed})",
        EVENT_CLASSES,
        wavs,
        lengths,
        labels,
    )


def folder_probe_set(data_dir: str, clip_seconds: float = 5.0) -> LabelledSet:
    """A user's labelled set: ESC-50 (folds 1-4 train, 5 test) or one sub-folder per class.

    Raises:
      FileNotFoundError: no such directory, or no layout it reads (names the accepted ones).
      ValueError: an FSD50K directory (multi-label: not a single-label probe set), or a class
        without train or test clips.
      AudioError: a file cannot be decoded (names it).
    """
    index = clip_sources.index_sources(data_dir)
    if index.layout == "fsd50k":
        raise ValueError(
            f"{index.name} has several labels per clip; the probe needs one label per clip: "
            "pass ESC-50's folder or one sub-folder per class."
        )
    classes = index.labels
    n = int(round(clip_seconds * SAMPLE_RATE))
    per_split: dict[str, list[tuple[str, int]]] = {s: [] for s in PROBE_SPLITS}
    for r in index.recordings:
        split = "test" if r.split == "eval" else "train"  # ESC-50 fold 4 trains the probe
        per_split[split].append((os.path.join(index.root, r.path), classes.index(r.labels[0])))
    wavs, lengths, labels = {}, {}, {}
    for split, items in per_split.items():
        missing = sorted(set(range(len(classes))) - {y for _, y in items})
        if missing:
            raise ValueError(
                f"{index.name}: the {split} split has no clip of class(es) "
                f"{[classes[k] for k in missing]}; every class needs train and test clips."
            )
        wavs[split] = np.zeros((len(items), n), np.float32)
        lengths[split] = np.zeros(len(items), np.int32)
        for i, (path, _) in enumerate(items):
            _, lengths[split][i], _ = fit_length(
                load_audio(path, SAMPLE_RATE), n, out=wavs[split][i]
            )
        labels[split] = np.asarray([y for _, y in items], np.int32)
    return LabelledSet(f"{index.name}, {clip_seconds:g} s clips", classes, wavs, lengths, labels)


# ---------------------------------------------------------------------------------- encoders


@dataclasses.dataclass
class Encoder:
    """A frozen encoder: the module, its shape and the log-mel normalisation it expects."""

    name: str
    module: byola.AudioNTT2020
    norm_mean: float = NORM_MEAN
    norm_std: float = NORM_STD

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.module.n_mels, self.module.channels, self.module.dim


def read_meta(path: str) -> dict:
    """The meta.json of a converted-weights directory (n_mels, channels, dim, ...).

    Raises:
      FileNotFoundError, ValueError: no readable meta.json with integer shape fields.
    """
    meta_path = os.path.join(os.path.expanduser(path), BYOLA_META_FILE)
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(
            f"{path!r} holds no {BYOLA_META_FILE}: pass a directory written by "
            "tools/convert_byola.py or by adc_jax.pretrain (W/encoder)."
        )
    with open(meta_path) as f:
        meta = json.load(f)
    lacking = [k for k in ("n_mels", "channels", "dim") if type(meta.get(k)) is not int]
    if lacking:
        raise ValueError(f"{meta_path} lacks the integer field(s) {lacking}; convert it again.")
    return meta


def random_encoder(
    shape: tuple[int, int, int],
    seed: int,
    norm: tuple[float, float] = (NORM_MEAN, NORM_STD),
) -> Encoder:
    """AudioNTT2020 of shape (n_mels, channels, dim) at random initialisation from `seed`, fed
    log-mel normalised with norm = (mean, std)."""
    n_mels, channels, dim = shape
    module = byola.AudioNTT2020(n_mels=n_mels, channels=channels, dim=dim, rngs=nnx.Rngs(seed))
    return Encoder(f"random init (seed {seed})", module, *norm)


def load_encoder(path: str, name: str) -> Encoder:
    """The encoder of a converted-weights directory (shapes and normalisation from meta.json)."""
    meta = read_meta(path)
    module = byola.AudioNTT2020(
        n_mels=meta["n_mels"], channels=meta["channels"], dim=meta["dim"], rngs=nnx.Rngs(0)
    )
    byola.load_pretrained(module, os.path.expanduser(path))
    # adc_jax.pretrain stores the log-mel statistics it normalised with; official weights don't.
    stats = meta.get("norm_stats") if isinstance(meta.get("norm_stats"), dict) else meta
    mean, std = stats.get("norm_mean", NORM_MEAN), stats.get("norm_std", NORM_STD)
    return Encoder(name, module, float(mean), float(std))


@functools.lru_cache(maxsize=8)
def _embed_fn(graphdef, n_mels: int, norm_mean: float, norm_std: float):
    """Jitted (state, wav [B, N], valid frames [B]) -> max + mean pooled features [B, d]."""

    def embed(state, wav, valid):
        module = nnx.merge(graphdef, state)
        x = log_mel(wav, n_mels=n_mels, mean=norm_mean, std=norm_std)
        h = module(x, train=False).astype(jnp.float32)  # [B, T', d]
        mask = (jnp.arange(h.shape[1])[None, :] < valid[:, None])[..., None]
        pooled_max = jnp.max(jnp.where(mask, h, -jnp.inf), axis=1)
        pooled_mean = jnp.sum(jnp.where(mask, h, 0.0), axis=1) / valid[:, None]
        return pooled_max + pooled_mean

    return jax.jit(embed)


def embed(
    encoder: Encoder, wavs: np.ndarray, lengths: np.ndarray, batch_size: int = EMBED_BATCH
) -> np.ndarray:
    """Clip embeddings [n, d] float32 of wavs [n, N] with `lengths` valid samples each."""
    graphdef, state = nnx.split(encoder.module)
    fn = _embed_fn(graphdef, encoder.module.n_mels, encoder.norm_mean, encoder.norm_std)
    valid = np.maximum(
        [byola.num_output_frames(num_frames(int(n), HOP_LENGTH)) for n in lengths], 1
    ).astype(np.int32)
    out = []
    for start in range(0, wavs.shape[0], batch_size):
        stop = min(start + batch_size, wavs.shape[0])
        rows = np.arange(start, start + batch_size).clip(max=stop - 1)  # a full last batch
        out.append(np.asarray(fn(state, wavs[rows], valid[rows]))[: stop - start])
    return np.concatenate(out)


# ------------------------------------------------------------------------------------ probe


@dataclasses.dataclass
class LinearProbe:
    """A fitted probe: logits = ((x - mean) / std) @ weights + bias."""

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    l2: float
    iterations: int
    grad_norm: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        """[n] int class indices of features [n, D]."""
        z = (features - self.mean) / self.std
        return np.argmax(z @ self.weights + self.bias, axis=1)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _fit(x, y, weights, l2, *, num_classes: int):
    """L-BFGS on the weighted mean cross-entropy + l2 / 2 |W|^2 of standardised features."""
    w = weights / jnp.sum(weights)
    mean = w @ x
    std = jnp.sqrt(w @ jnp.square(x - mean))
    std = jnp.where(std > 1e-6, std, 1.0)  # a constant feature stays 0 after standardising
    z = (x - mean) / std
    onehot = jax.nn.one_hot(y, num_classes)

    def loss(params):
        logits = z @ params["w"] + params["b"]
        ce = jax.nn.logsumexp(logits, axis=1) - jnp.sum(onehot * logits, axis=1)
        return w @ ce + 0.5 * l2 * jnp.sum(jnp.square(params["w"]))

    params = {
        "w": jnp.zeros((x.shape[1], num_classes), jnp.float32),
        "b": jnp.zeros((num_classes,), jnp.float32),
    }
    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=loss)
        return optax.apply_updates(params, updates), state

    def running(carry):
        _, state = carry
        count = otu.tree_get(state, "count")
        grad = otu.tree_get(state, "grad")
        return (count == 0) | ((count < MAX_ITERATIONS) & (otu.tree_norm(grad) >= GRAD_TOL))

    params, state = jax.lax.while_loop(running, step, (params, solver.init(params)))
    grad_norm = otu.tree_norm(jax.grad(loss)(params))
    return params, mean, std, otu.tree_get(state, "count"), grad_norm


def fit_logistic(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    l2: float,
    weights: np.ndarray | None = None,
) -> LinearProbe:
    """Fits a multinomial logistic-regression probe (see the module docstring).

    Args:
      features: [n, D] float; labels: [n] int in [0, num_classes).
      l2: L2 strength on the weights (of standardised features).
      weights: [n] 0/1 selecting the rows to fit on (default: all); keeping the array's shape
        lets cross-validation reuse one compilation.
    """
    x = jnp.asarray(features, jnp.float32)
    w = jnp.ones(x.shape[0], jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
    params, mean, std, count, grad_norm = _fit(
        x, jnp.asarray(labels, jnp.int32), w, jnp.float32(l2), num_classes=num_classes
    )
    return LinearProbe(
        np.asarray(mean),
        np.asarray(std),
        np.asarray(params["w"]),
        np.asarray(params["b"]),
        float(l2),
        int(count),
        float(grad_norm),
    )


def cv_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """[n] fold of every row: each class's rows in a seeded random order, dealt out in turn."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(labels.shape[0], np.int64)
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        fold[rows] = np.arange(rows.shape[0]) % folds
    return fold


@dataclasses.dataclass
class ProbeResult:
    """Held-out accuracy of the refit probe, the chosen l2 and every candidate's CV accuracy."""

    accuracy: float
    l2: float
    cv_accuracy: dict[float, float]
    probe: LinearProbe


def probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    num_classes: int,
    *,
    l2_grid: Sequence[float] = L2_GRID,
    folds: int = CV_FOLDS,
    seed: int = 0,
) -> ProbeResult:
    """Chooses l2 by stratified cross-validation on the train set, refits, scores the test set.

    Ties go to the larger l2 (the simpler probe).
    """
    fold = cv_folds(train_y, folds, seed)
    cv = {}
    for l2 in l2_grid:
        correct = 0
        for k in range(folds):
            probe = fit_logistic(train_x, train_y, num_classes, l2=l2, weights=fold != k)
            held = fold == k
            correct += int(np.sum(probe.predict(train_x[held]) == train_y[held]))
        cv[float(l2)] = correct / train_y.shape[0]
    best = max(cv.items(), key=lambda kv: (kv[1], kv[0]))[0]
    probe = fit_logistic(train_x, train_y, num_classes, l2=best)
    accuracy = float(np.mean(probe.predict(test_x) == test_y))
    return ProbeResult(accuracy, best, cv, probe)


def evaluate_encoder(encoder: Encoder, data: LabelledSet) -> tuple[ProbeResult, float]:
    """(probe result, seconds for embedding both splits and probing)."""
    start = time.perf_counter()
    x = {s: embed(encoder, data.wavs[s], data.lengths[s]) for s in PROBE_SPLITS}
    result = probe_accuracy(
        x["train"], data.labels["train"], x["test"], data.labels["test"], len(data.classes)
    )
    return result, time.perf_counter() - start


# ------------------------------------------------------------------------------------ table


@dataclasses.dataclass
class Row:
    """One row of the table: an encoder (or the mean over several) and its probe accuracy."""

    encoder: str
    shape: tuple[int, int, int]
    accuracies: list[float]
    l2: list[float]
    train_clips: int
    test_clips: int
    seconds: float

    @property
    def accuracy(self) -> float:
        return statistics.fmean(self.accuracies)


def format_table(rows: Sequence[Row], data: LabelledSet) -> str:
    """The printed table: encoder, shape, held-out accuracy (mean, and its values), clips, time."""
    header = ("encoder", "n_mels x channels, d", "probe acc.", "values", "train/test", "time")
    lines = [header]
    for r in rows:
        values = ", ".join(f"{100 * a:.1f}" for a in r.accuracies) if len(r.accuracies) > 1 else ""
        lines.append(
            (
                r.encoder,
                f"{r.shape[0]} x {r.shape[1]}, {r.shape[2]}",
                f"{100 * r.accuracy:.1f}%" + (f" (mean of {len(r.accuracies)})" if values else ""),
                values,
                f"{r.train_clips}/{r.test_clips}",
                f"{r.seconds:.1f} s",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [f"Linear probe on {data.name}: {len(data.classes)} classes, held-out accuracy."]
    for i, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def against_random_init(rows: Sequence[Row]) -> list[tuple[Row, Difference]]:
    """(row, its accuracy minus random init's) for every row of several values that has a
    random-init row of its shape with several values: Welch's test over the values (seeds)."""
    random_rows = {r.shape: r for r in rows if r.encoder.startswith(RANDOM_INIT)}
    out = []
    for r in rows:
        reference = random_rows.get(r.shape)
        if r.encoder.startswith(RANDOM_INIT) or reference is None:
            continue
        if len(r.accuracies) > 1 and len(reference.accuracies) > 1:
            out.append((r, welch_difference(r.accuracies, reference.accuracies)))
    return out


def format_differences(pairs: Sequence[tuple[Row, Difference]]) -> str:
    """The lines under the table: each row's gain over random init, in points."""
    lines = ["Against random init of the same shape (Welch over the seeds' values, 95%):"]
    for row, d in pairs:
        lines.append(
            f"  {row.encoder.split(':')[0]}: {100 * d.delta:+.1f} points "
            f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}], p = {d.p_value:.3f} "
            f"({d.n_a} vs {d.n_b} values)"
        )
    return "\n".join(lines)


def _row(name: str, encoders: Sequence[Encoder], data: LabelledSet) -> Row:
    results = [evaluate_encoder(e, data) for e in encoders]
    return Row(
        name,
        encoders[0].shape,
        [r.accuracy for r, _ in results],
        [r.l2 for r, _ in results],
        data.size("train"),
        data.size("test"),
        sum(s for _, s in results),
    )


def _paths(value: str) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def run(args: argparse.Namespace) -> tuple[list[Row], LabelledSet]:
    """The rows of the table for parsed flags."""
    if args.data_dir:
        data = folder_probe_set(args.data_dir, args.clip_seconds or 5.0)
    else:
        data = builtin_probe_set(
            args.train_per_class,
            args.test_per_class,
            seed=args.probe_seed,
            clip_seconds=args.clip_seconds or CLIP_SECONDS,
            instances_per_class=args.instances_per_class,
        )
    rows, shapes = [], {}
    flags = (
        (args.encoder, "pretrained"),
        (args.official, "official"),
        (args.supervised, "supervised"),
    )
    for flag, label in flags:
        paths = _paths(flag)
        if not paths:
            continue
        encoders = [load_encoder(p, f"{label} ({p})") for p in paths]
        if len({e.shape for e in encoders}) > 1:
            raise ValueError(
                f"The {label} encoders {paths} have different shapes "
                f"{[e.shape for e in encoders]}; give one shape per flag."
            )
        rows.append(_row(f"{label}: " + ", ".join(paths), encoders, data))
        first = encoders[0]
        shapes.setdefault(first.shape, (first.norm_mean, first.norm_std))
    if not shapes:
        shapes[(args.n_mels, args.channels, args.dim)] = (args.norm_mean, args.norm_std)
    seeds = [int(s) for s in _paths(args.seeds)]
    if not seeds:
        raise ValueError(f"--seeds={args.seeds!r} names no seed; e.g. --seeds=0,1.")
    # One random-init row per distinct shape, with the input normalisation of the first encoder
    # of that shape, so it differs from that encoder by its weights alone.
    for shape, norm in shapes.items():
        encoders = [random_encoder(shape, s, norm) for s in seeds]
        name = f"{RANDOM_INIT}, seed " + ",".join(map(str, seeds))
        rows.append(_row(name, encoders, data))
    return rows, data


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="", help="converted encoder dir(s), comma-separated")
    parser.add_argument("--official", default="", help="converted official BYOL-A weights dir")
    parser.add_argument(
        "--supervised", default="", help="tools/supervised_reference.py encoder dir(s)"
    )
    parser.add_argument("--seeds", default="0,1", help="random-init seeds (default 0,1)")
    parser.add_argument("--data_dir", default="", help="ESC-50 or folder-per-class labelled set")
    parser.add_argument(
        "--clip_seconds", type=float, default=None, help="clip length (built-in 1, data_dir 5)"
    )
    parser.add_argument("--train_per_class", type=int, default=100, help="built-in set size")
    parser.add_argument("--test_per_class", type=int, default=50, help="built-in set size")
    parser.add_argument("--probe_seed", type=int, default=0, help="seed of the built-in set")
    parser.add_argument(
        "--instances_per_class",
        type=int,
        default=INSTANCES_PER_CLASS,
        help="built-in set: event instances of each class per split",
    )
    parser.add_argument("--n_mels", type=int, default=64, help="random init without --encoder")
    parser.add_argument("--channels", type=int, default=16, help="random init without --encoder")
    parser.add_argument("--dim", type=int, default=256, help="random init without --encoder")
    parser.add_argument(
        "--norm_mean", type=float, default=NORM_MEAN, help="random init without --encoder"
    )
    parser.add_argument(
        "--norm_std", type=float, default=NORM_STD, help="random init without --encoder"
    )
    parser.add_argument("--json_out", default="", help="append the rows as JSON lines here")
    args = parser.parse_args(argv)
    for name in ("train_per_class", "test_per_class", "instances_per_class"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1.")
    return args


def main(argv: Sequence[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    rows, data = run(args)
    print(format_table(rows, data))
    pairs = against_random_init(rows)
    gains = {id(r): d for r, d in pairs}
    if pairs:
        print(format_differences(pairs))
    if args.json_out:
        with open(args.json_out, "a") as f:
            for r in rows:
                line = {**dataclasses.asdict(r), "accuracy": r.accuracy}
                if id(r) in gains:
                    line["vs_random_init"] = dataclasses.asdict(gains[id(r)])
                f.write(json.dumps(line) + "\n")
    return rows


if __name__ == "__main__":
    main()
