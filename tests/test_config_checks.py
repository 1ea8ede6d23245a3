"""Tests of `adc_jax.config_checks`: the field checks, the section checks, and that the
captioner's and pretraining's `validate` reject a bad shared field with the same message."""

from __future__ import annotations

import re

import ml_collections
import numpy as np
import pytest

from adc_jax import config as config_lib
from adc_jax import config_checks as checks
from adc_jax.config_checks import ConfigError
from adc_jax.models import frontend
from adc_jax.pretrain import config as pretrain_config_lib


def fields(**values) -> ml_collections.ConfigDict:
    """A config with one section, `s`, holding `values` (checked as "s.<name>")."""
    return ml_collections.ConfigDict({"s": values})


def rejects(check, c, key: str, shown: str, *why: str) -> str:
    """Asserts `check(c)` raises ConfigError naming `config.<key>=<shown>` and every `why`."""
    with pytest.raises(ConfigError) as info:
        check(c)
    message = str(info.value)
    assert message.startswith(f"config.{key}={shown} is invalid: "), message
    for part in why:
        assert part in message, message
    return message


# ----------------------------------------------------------------------------- field access


def test_get_and_has_field_follow_dotted_names():
    c = ml_collections.ConfigDict({"model": {"d_model": 32, "sub": {"x": None}}, "name": "n"})
    assert checks.get_field(c, "model.d_model") == 32
    assert checks.get_field(c, "name") == "n"
    assert checks.get_field(c, "model.sub.x") is None
    assert checks.has_field(c, "model.d_model")
    assert checks.has_field(c, "model.sub.x")  # present, though None
    assert not checks.has_field(c, "model.nope")
    assert not checks.has_field(c, "nope.d_model")
    assert not checks.has_field(c, "model.d_model.deeper")  # an int has no fields
    with pytest.raises((KeyError, AttributeError)):
        checks.get_field(c, "model.nope")


# ----------------------------------------------------------------------------- field checks


def test_is_int_rejects_bools_and_floats():
    assert checks.is_int(0) and checks.is_int(-3) and checks.is_int(7)
    assert not checks.is_int(True) and not checks.is_int(False)
    assert not checks.is_int(1.0) and not checks.is_int("1")


@pytest.mark.parametrize("value", [1, 8, 10**9])
def test_positive_int_accepts(value):
    checks.positive_int(fields(n=value), "s.n")


@pytest.mark.parametrize(
    ("value", "shown"), [(0, "0"), (-1, "-1"), (True, "True"), (2.0, "2.0"), ("3", "'3'")]
)
def test_positive_int_rejects(value, shown):
    rejects(
        lambda c: checks.positive_int(c, "s.n"),
        fields(n=value),
        "s.n",
        shown,
        "must be a positive integer.",
    )


def test_non_negative_int():
    checks.non_negative_int(fields(n=0), "s.n")
    checks.non_negative_int(fields(n=5), "s.n")
    for value, shown in ((-1, "-1"), (False, "False"), (0.0, "0.0")):
        rejects(
            lambda c: checks.non_negative_int(c, "s.n"),
            fields(n=value),
            "s.n",
            shown,
            "must be an integer >= 0.",
        )


def test_choice_lists_the_choices():
    checks.choice(fields(mode="skip"), "s.mode", ("stop", "skip"))
    rejects(
        lambda c: checks.choice(c, "s.mode", ("stop", "skip")),
        fields(mode="Skip"),
        "s.mode",
        "'Skip'",
        "must be one of 'stop', 'skip'.",
    )


@pytest.mark.parametrize(
    ("lo_open", "hi_open", "interval"),
    [(False, False, "[0.0, 1.0]"), (True, False, "(0.0, 1.0]"), (False, True, "[0.0, 1.0)")],
)
def test_in_range_open_and_closed_ends(lo_open, hi_open, interval):
    def check(c):
        checks.in_range(c, "s.x", 0.0, 1.0, lo_open=lo_open, hi_open=hi_open)

    check(fields(x=0.5))
    checks.in_range(fields(x=3), "s.x", 0, 5, lo_open=lo_open, hi_open=hi_open)  # ints count
    for bound, is_open in ((0.0, lo_open), (1.0, hi_open)):
        if is_open:
            rejects(check, fields(x=bound), "s.x", repr(bound), f"must be a number in {interval}.")
        else:
            check(fields(x=bound))
    for value in (-0.1, 1.1, float("nan"), float("inf"), True, "0.5"):
        rejects(check, fields(x=value), "s.x", repr(value), f"must be a number in {interval}.")


def test_in_range_with_infinite_bounds_still_refuses_infinity():
    def check(c):
        checks.in_range(c, "s.x", 0.0, float("inf"), hi_open=True)

    check(fields(x=1e30))
    rejects(check, fields(x=float("inf")), "s.x", "inf", "[0.0, inf)")


def test_boolean():
    checks.boolean(fields(b=True), "s.b")
    checks.boolean(fields(b=False), "s.b")
    for value in (1, 0, "True", None):
        rejects(
            lambda c: checks.boolean(c, "s.b"),
            fields(b=value),
            "s.b",
            repr(value),
            "must be True or False.",
        )


def test_existing_directory(tmp_path):
    def check(c):
        checks.existing_directory(c, "s.dir", "when data.name is 'adiff'", "your ADIFF copy")

    check(fields(dir=str(tmp_path)))
    rejects(
        check,
        fields(dir=""),
        "s.dir",
        "''",
        "must name a directory when data.name is 'adiff'",
        "--config.s.dir=/path/to/it",
    )
    missing = str(tmp_path / "missing")
    rejects(check, fields(dir=missing), "s.dir", repr(missing), "does not exist", "your ADIFF copy")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    rejects(check, fields(dir=str(a_file)), "s.dir", repr(str(a_file)), "does not exist")


def test_parse_size():
    assert checks.parse_size(None) == "paper"
    assert checks.parse_size(" Quick ") == "quick"
    with pytest.raises(ConfigError, match=r"'tiny'.*paper, quick, smoke"):
        checks.parse_size("tiny")


# --------------------------------------------------------------------------- section checks


@pytest.fixture(name="smoke")
def smoke_fixture() -> ml_collections.ConfigDict:
    """A fresh captioner smoke config (callers may mutate it)."""
    return config_lib.base_config("smoke")


def test_check_clip_names_the_minimum_seconds(smoke):
    checks.check_clip(smoke)
    hop, rate = smoke.model.hop_length, smoke.data.sample_rate
    shortest = checks.min_clip_samples(smoke)
    smoke.data.clip_seconds = shortest / rate
    checks.check_clip(smoke)  # exactly the minimum works
    smoke.data.clip_seconds = (shortest - 1) / rate
    message = rejects(
        checks.check_clip,
        smoke,
        "data.clip_seconds",
        repr(smoke.data.clip_seconds),
        f"a clip of {shortest - 1} samples is too short for BYOL-A's three 2x2 poolings",
        f"use at least {shortest / rate:.3f} s.",
    )
    assert hop == 160 and "0.070 s" in message
    smoke.data.clip_seconds = 0.0
    rejects(checks.check_clip, smoke, "data.clip_seconds", "0.0", "(0.0, 600.0]")
    smoke.data.clip_seconds, smoke.data.sample_rate = 1.0, 0
    rejects(checks.check_clip, smoke, "data.sample_rate", "0", "positive integer")


def test_min_clip_samples_is_the_fewest_that_give_eight_mel_frames(smoke):
    """The minimum the check names is the real one: 8 log-mel frames (one frame after three
    poolings by 2) from `min_clip_samples`, 7 from one sample fewer."""
    settings = frontend.LogMelSettings.from_config(smoke)
    shortest = checks.min_clip_samples(smoke)
    for n, frames in ((shortest, 8), (shortest - 1, 7)):
        mel = settings(np.zeros((1, n), np.float32))
        assert mel.shape == (1, frames, smoke.model.n_mels)


@pytest.mark.parametrize(
    ("key", "value", "shown", "why"),
    [
        ("n_mels", 60, "60", "must be a multiple of 8"),
        ("win_length", 2048, "2048", "must not exceed model.n_fft=1024."),
        ("f_max", 60.0, "60.0", "must be a number in (60.0, 8000.0]"),
        ("f_max", 9000.0, "9000.0", "must be a number in (60.0, 8000.0]"),
        ("f_min", -1.0, "-1.0", "must be a number in [0.0, 8000.0]"),
        ("dtype", "float16", "'float16'", "must be one of 'float32', 'bfloat16'."),
        ("byola_first_block", "fft", "'fft'", "'auto', 'conv', 'phases'"),
        ("byola_channels", 0, "0", "positive integer"),
        ("norm_std", 0.0, "0.0", "(0.0, inf)"),
        ("byola_dropout", 1.0, "1.0", "[0.0, 1.0)"),
    ],
)
def test_check_encoder_rejects(smoke, key, value, shown, why):
    checks.check_encoder(smoke)
    smoke.model[key] = value
    rejects(checks.check_encoder, smoke, f"model.{key}", shown, why)


def test_check_optimizer_grad_clip_zero_only_when_optional(smoke):
    checks.check_optimizer(smoke, clipping_optional=False)
    smoke.train.grad_clip = 0.0
    checks.check_optimizer(smoke, clipping_optional=True)
    rejects(
        lambda c: checks.check_optimizer(c, clipping_optional=False),
        smoke,
        "train.grad_clip",
        "0.0",
        "(0.0, inf)",
    )
    smoke.train.grad_clip = -1.0
    rejects(
        lambda c: checks.check_optimizer(c, clipping_optional=True),
        smoke,
        "train.grad_clip",
        "-1.0",
        "[0.0, inf)",
    )


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("batch_size", 0, "positive integer"),
        ("checkpoint_every", 0, "positive integer"),
        ("warmup_steps", -1, "integer >= 0"),
        ("learning_rate", 0.0, "(0.0, 1.0]"),
        ("final_lr_fraction", 1.5, "[0.0, 1.0]"),
        ("nonfinite", "ignore", "'stop', 'skip'"),
    ],
)
def test_check_optimizer_rejects(smoke, key, value, why):
    smoke.train[key] = value
    rejects(
        lambda c: checks.check_optimizer(c, clipping_optional=True),
        smoke,
        f"train.{key}",
        repr(value),
        why,
    )


def test_check_batch_divides_suggests_a_divisible_batch():
    c = ml_collections.ConfigDict({"train": {"batch_size": 10}, "eval": {"batch_size": 3}})
    checks.check_batch_divides(c, ("train.batch_size", "eval.batch_size"), None)  # unknown: ok
    checks.check_batch_divides(c, ("train.batch_size",), 5)
    message = rejects(
        lambda c: checks.check_batch_divides(c, ("train.batch_size",), 4),
        c,
        "train.batch_size",
        "10",
        "divisible by the number of devices (4); try 8.",
    )
    suggested = int(re.search(r"try (\d+)", message).group(1))
    assert suggested % 4 == 0
    # A batch smaller than the device count: the suggestion is the device count itself.
    rejects(
        lambda c: checks.check_batch_divides(c, ("train.batch_size", "eval.batch_size"), 5),
        c,
        "eval.batch_size",
        "3",
        "try 5.",
    )


# ------------------------------------------------- both trainers' validate share the checks


def _captioner():
    return config_lib.base_config("smoke")


def _pretraining():
    return pretrain_config_lib.pretrain_config("smoke")


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("model", "n_mels", 60),
        ("model", "win_length", 4096),
        ("model", "f_max", 10.0),
        ("model", "dtype", "float64"),
        ("data", "clip_seconds", 0.01),
        ("data", "sample_rate", -16000),
        ("train", "nonfinite", "warn"),
        ("train", "num_steps", 0),
    ],
)
def test_both_trainers_reject_a_bad_shared_field_alike(section, key, value):
    config_lib.validate(_captioner())
    pretrain_config_lib.validate(_pretraining())
    messages = []
    for make, validate in (
        (_captioner, config_lib.validate),
        (_pretraining, pretrain_config_lib.validate),
    ):
        c = make()
        c[section][key] = value
        with pytest.raises(ConfigError) as info:
            validate(c)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith(f"config.{section}.{key}={value!r} is invalid: ")


def test_both_trainers_check_batch_divisibility_alike():
    captioner, pretraining = _captioner(), _pretraining()
    captioner.train.batch_size = pretraining.train.batch_size = 6
    messages = []
    for c, validate in (
        (captioner, config_lib.validate),
        (pretraining, pretrain_config_lib.validate),
    ):
        validate(c, num_devices=2)
        with pytest.raises(ConfigError) as info:
            validate(c, num_devices=4)
        messages.append(str(info.value))
    expected = (
        "config.train.batch_size=6 is invalid: must be divisible by the number of devices "
        "(4); try 4."
    )
    assert messages == [expected, expected]


def test_grad_clip_zero_is_refused_by_the_captioner_only():
    captioner, pretraining = _captioner(), _pretraining()
    captioner.train.grad_clip = pretraining.train.grad_clip = 0.0
    pretrain_config_lib.validate(pretraining)
    with pytest.raises(ConfigError, match=r"^config\.train\.grad_clip=0\.0 is invalid"):
        config_lib.validate(captioner)


def test_captioner_validate_accepts_clip_pairs_and_checks_its_class_fields(tmp_path):
    c = _captioner()
    c.data.name = "clip_pairs"
    c.data.clips_dir = str(tmp_path)
    c.data.background_dir = ""
    config_lib.validate(c)
    c.data.clip_classes = None
    with pytest.raises(ConfigError, match=r"^config\.data\.clip_classes=None is invalid"):
        config_lib.validate(c)
