"""The optimiser, the train state, the pure jitted train step and the jitted decoders.

Nothing here imports the data or evaluation stack (tfds, grain, librosa, pycocoevalcap), so the
step can be benchmarked on a machine that only has jax, flax, optax and numpy.

The train state is the NNX state of `(model, optimizer)` minus the dropout RNG streams: those are
reseeded inside the step from `fold_in(seed_key, step)`, so randomness depends only on the step
number and a resumed run draws exactly the same dropout masks as an uninterrupted one.

Batch fields (global arrays, first axis = global batch B):
  wav1, wav2:         [B, N] int16 (or float) waveforms;   wav1_len, wav2_len: [B] int32 samples
  tokens:             [B, L] int32 <bos> w1 ... <eos> <pad>...
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh

from adc_jax import sharding as sharding_lib
from adc_jax import train_state
from adc_jax.data.tokenizer import PAD
from adc_jax.models import gpt2, tiny_gpt2
from adc_jax.models.adc import ADCModel, create_model
from adc_jax.models.byola import load_pretrained
from adc_jax.models.decoder import beam_search, greedy_decode

BYOLA_PREFIX = "byola"
# Path of the pretrained LM inside the model (`LMDecoder.lm`).
LM_PREFIX = ("decoder", "lm")


# ---------------------------------------------------------------------------------- optimiser


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up from 0 to the peak, then cosine decay to final_lr_fraction * peak."""
    return train_state.warmup_cosine_schedule(config.train)


def _param_labels(params):
    """'byola' for parameters of the BYOL-A extractor, 'lm' for the pretrained GPT-2's own
    parameters (not its new cross-attention sub-layers), 'rest' for everything else."""

    def label(path, _):
        names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
        if names[0] == BYOLA_PREFIX:
            return "byola"
        if names[:2] == list(LM_PREFIX) and "cross" not in names:
            return "lm"
        return "rest"

    return jax.tree_util.tree_map_with_path(label, params)


def _scaled_or_frozen(adamw, schedule, frozen: bool, scale: float):
    """set_to_zero when frozen, else AdamW at schedule * scale."""
    if frozen:
        return optax.set_to_zero()
    if scale != 1.0:
        return adamw(lambda step: schedule(step) * scale)
    return adamw(schedule)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW; BYOL-A and a pretrained LM decoder each get a scaled
    learning rate or are frozen."""
    t, m = config.train, config.model
    schedule = learning_rate_schedule(config)

    def adamw(lr):
        return optax.adamw(
            lr,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=t.weight_decay,
            mask=train_state.decay_mask,
        )

    byola_tx = _scaled_or_frozen(adamw, schedule, m.byola_freeze, m.byola_lr_scale)
    transforms = {"byola": byola_tx, "rest": adamw(schedule)}
    if m.get("lm_path"):  # only then: the optimizer state of word-decoder runs is unchanged
        transforms["lm"] = _scaled_or_frozen(adamw, schedule, m.lm_freeze, m.lm_lr_scale)
    return optax.chain(
        optax.clip_by_global_norm(t.grad_clip),
        optax.multi_transform(transforms, _param_labels),
    )


# ---------------------------------------------------------------------------------- state


def build_model_and_optimizer(
    config: ml_collections.ConfigDict, vocab_size: int
) -> tuple[ADCModel, nnx.Optimizer]:
    """The model (BYOL-A weights loaded if configured) and its optimizer, from config.seed."""
    model = create_model(config, vocab_size, train_state.init_rngs(config.seed))
    if config.model.byola_init:
        load_pretrained(model.byola, config.model.byola_init, frozen=config.model.byola_freeze)
    if config.model.get("lm_path") and config.model.lm_weights:
        gpt2.load_weights(model.decoder.lm, tiny_gpt2.lm_directory(config))
    return model, nnx.Optimizer(model, make_optimizer(config), wrt=nnx.Param)


def create_train_state(
    config: ml_collections.ConfigDict, vocab_size: int, mesh: Mesh
) -> train_state.TrainState:
    """Initialises the model (and BYOL-A weights if configured) and places it on the mesh.

    Initialisation runs on the host from `config.seed`, so every process computes the same
    values; each device then takes its slice according to `sharding.STATE_RULES` (or, with
    model.lm_fsdp, `sharding.LM_FSDP_RULES`).
    """

    def build():
        model, optimizer = build_model_and_optimizer(config, vocab_size)
        return {"model": model, "optimizer": optimizer}

    fsdp = config.model.get("lm_path") and config.model.get("lm_fsdp", False)
    rules = sharding_lib.LM_FSDP_RULES if fsdp else sharding_lib.STATE_RULES
    return train_state.place_on_mesh(build, mesh, rules)


def parameter_count(state: nnx.State) -> int:
    """Number of trainable parameters in a train state."""
    return train_state.parameter_count(state["model"])


# ---------------------------------------------------------------------------------- losses


@dataclasses.dataclass(frozen=True)
class LossConfig:
    sdd_weight: float
    label_smoothing: float

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> LossConfig:
        return cls(float(config.model.sdd_weight), float(config.model.label_smoothing))


def compute_loss(
    model: ADCModel, batch: dict[str, jax.Array], loss_config: LossConfig, *, train: bool
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss = caption cross-entropy + sdd_weight * (L_S + L_D); scalar float32 and terms.

    The cross-entropy is the mean over all non-padding target tokens of the global batch.
    """
    tokens = batch["tokens"]
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    weights = (targets != PAD).astype(jnp.float32)
    out = model(
        batch["wav1"], batch["wav1_len"], batch["wav2"], batch["wav2_len"], inputs, train=train
    )
    logits = out["logits"]
    # Cross-entropy against the smoothed labels (1 - a) * one_hot + a / V, without building
    # the [B, L, V] label tensor: (1 - a) * NLL(target) + a * mean over the vocabulary of -log p.
    # With a 10k-word vocabulary the one-hot labels cost more than the decoder on a CPU.
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    alpha = loss_config.label_smoothing
    token_ce = (1.0 - alpha) * nll - alpha * jnp.mean(logp, axis=-1) if alpha else nll
    n_tokens = jnp.maximum(weights.sum(), 1.0)
    caption_loss = jnp.sum(token_ce * weights) / n_tokens
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    metrics = {
        "caption_loss": caption_loss,
        "token_accuracy": jnp.sum(correct * weights) / n_tokens,
    }
    loss = caption_loss
    if "similar_loss" in out:
        sdd_loss = out["similar_loss"] + out["discrepant_loss"]
        loss = loss + loss_config.sdd_weight * sdd_loss
        metrics.update(
            similar_loss=out["similar_loss"],
            discrepant_loss=out["discrepant_loss"],
            sdd_loss=sdd_loss,
        )
    metrics["loss"] = loss
    return loss, metrics


# ---------------------------------------------------------------------------------- train step


def train_step(
    graphdef: nnx.GraphDef,
    loss_config: LossConfig,
    schedule: optax.Schedule,
    seed_key: jax.Array,
    rng_state: nnx.State,
    state: nnx.State,
    batch: dict[str, jax.Array],
) -> tuple[nnx.State, dict[str, jax.Array]]:
    """One optimiser step; pure. Returns the new state and scalar metrics.

    A step whose loss or gradient norm is not finite leaves the state unchanged (metrics report
    `finite` = 0); the training loop then stops or counts it, as `train.nonfinite` says.
    """
    # copy=True: the update below mutates the merged Variables in place; without a copy it would
    # also overwrite `state`, and a non-finite step could not fall back to it.
    parts = nnx.merge(graphdef, rng_state, state, copy=True)
    model, optimizer = parts["model"], parts["optimizer"]
    step = optimizer.step[...]
    nnx.reseed(model, dropout=jax.random.fold_in(seed_key, step))

    def loss_fn(m):
        return compute_loss(m, batch, loss_config, train=True)

    (loss, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    grad_norm = optax.tree.norm(grads)
    optimizer.update(model, grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = train_state.keep_if_finite(finite, train_state.split_state(parts)[2], state, step)
    metrics.update(
        grad_norm=grad_norm, learning_rate=schedule(step), finite=finite.astype(jnp.float32)
    )
    return new_state, metrics


def jit_train_step(ts: train_state.TrainState, config: ml_collections.ConfigDict, mesh: Mesh):
    """The train step compiled for the mesh: (rng_state, state, batch) -> (state, metrics).

    The state is donated (updated in place); the batch is sharded over "data".
    """
    fn = functools.partial(
        train_step,
        ts.graphdef,
        LossConfig.from_config(config),
        learning_rate_schedule(config),
        dropout_seed_key(config),
    )
    return train_state.jit_step(fn, ts, mesh)


def dropout_seed_key(config: ml_collections.ConfigDict) -> jax.Array:
    """The key the step's dropout masks are folded from (the step number is folded in)."""
    return train_state.step_key(config, 2)


# ---------------------------------------------------------------------------------- decoding


def decode(
    graphdef: nnx.GraphDef,
    mode: str,
    beam_size: int,
    length_penalty: float,
    rng_state: nnx.State,
    state: nnx.State,
    batch: dict[str, jax.Array],
) -> tuple[jax.Array, jax.Array]:
    """Captions a batch: tokens [B, K, L-1] int32 (K = 1 for greedy) and scores [B, K].

    The batch may hold "start" [B] int32, each row's first decoder token (a tier token);
    without it every row starts from <bos>.
    """
    model = nnx.merge(graphdef, rng_state, state)["model"]
    enc = model.encode(
        batch["wav1"], batch["wav1_len"], batch["wav2"], batch["wav2_len"], train=False
    )
    start = batch.get("start")  # [B] first tokens (tier tokens); absent: <bos>
    if mode == "greedy":
        tokens, score = greedy_decode(
            model.decoder, enc["memory"], enc["memory_valid"], start=start
        )
        return tokens[:, None], score[:, None]
    return beam_search(
        model.decoder,
        enc["memory"],
        enc["memory_valid"],
        beam_size=beam_size,
        length_penalty=length_penalty,
        start=start,
    )


def jit_decode(
    ts: train_state.TrainState, mesh: Mesh, mode: str, beam_size: int, length_penalty: float
):
    """`decode` compiled for the mesh: (rng_state, state, batch) -> (tokens, scores)."""
    fn = functools.partial(decode, ts.graphdef, mode, beam_size, length_penalty)
    replicated = sharding_lib.replicated(mesh)
    batch_sh = sharding_lib.batch_sharding(mesh)
    return jax.jit(
        fn, in_shardings=(replicated, ts.shardings, batch_sh), out_shardings=(batch_sh, batch_sh)
    )
