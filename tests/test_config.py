"""Tests of the experiment configs (`configs/*.py`) and `adc_jax.config.validate`."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from absl import flags
from ml_collections import config_flags

from adc_jax import config as config_lib
from adc_jax.models import byola_weights

EXPERIMENTS = ("base", "baseline", "cac", "early_sdd", "late_sdd")
SIZE_ARGS = (None, "paper", "quick", "smoke")

# (attention, sdd) that define each experiment of the ablation.
EXPERIMENT_FIELDS = {
    "base": ("cross", "late"),
    "baseline": ("full", "none"),
    "cac": ("cross", "none"),
    "early_sdd": ("cross", "early"),
    "late_sdd": ("cross", "late"),
}


def parse_flags(argv: list[str]):
    """Parses argv with a fresh FlagValues holding only `--config`, as main.py defines it."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=fv, sys_argv=argv)
    fv(argv)
    return fv.config


@pytest.mark.parametrize("size", SIZE_ARGS)
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_config_and_size_loads_and_validates(load_config, name, size):
    c = load_config(name, size)
    config_lib.validate(c)
    assert c.size == (size or "paper")
    assert (c.model.attention, c.model.sdd) == EXPERIMENT_FIELDS[name]
    if name != "base":
        assert c.name == name
    # The decoder must be able to hold every caption the data pipeline produces: one position
    # fewer than the longest caption is rejected, naming the field to raise.
    short = c.copy_and_resolve_references()
    short.model.max_decode_len = c.data.max_caption_tokens - 1
    with pytest.raises(config_lib.ConfigError, match=r"config\.model\.max_decode_len="):
        config_lib.validate(short)
    # The resolved config is written as config.json: it must serialise.
    assert json.loads(c.to_json())["model"]["sdd"] == c.model.sdd


def test_sizes_shrink_the_same_experiment(load_config):
    paper, quick, smoke = (load_config("late_sdd", s) for s in ("paper", "quick", "smoke"))
    assert paper.model.d_model > quick.model.d_model > smoke.model.d_model
    assert paper.data.clip_seconds > quick.data.clip_seconds > smoke.data.clip_seconds
    # A size changes scale only, never the experiment's mechanisms.
    for c in (quick, smoke):
        assert (c.model.attention, c.model.sdd) == (paper.model.attention, paper.model.sdd)
    # The smoke size keeps a batch that 8 forced CPU devices can split.
    assert smoke.train.batch_size % 8 == 0


def test_unknown_size_names_the_sizes(load_config):
    with pytest.raises(config_lib.ConfigError) as info:
        load_config("late_sdd", "huge")
    message = str(info.value)
    assert "huge" in message
    for size in config_lib.SIZES:
        assert size in message


def test_command_line_size_and_override(load_config, config_path):
    c = parse_flags(
        [
            "prog",
            f"--config={config_path('late_sdd')}:smoke",
            "--config.train.batch_size=64",
            "--config.model.attention=full",
        ]
    )
    assert c.size == "smoke"
    assert c.train.batch_size == 64
    assert c.model.attention == "full"
    # Everything not overridden keeps the smoke value.
    assert c.model.d_model == load_config("late_sdd", "smoke").model.d_model
    config_lib.validate(c)


def test_command_line_unknown_key_fails_at_parsing(config_path):
    with pytest.raises(Exception) as info:  # ml_collections raises AttributeError(KeyError)
        parse_flags(
            ["prog", f"--config={config_path('late_sdd')}:smoke", "--config.train.no_such_key=1"]
        )
    assert "no_such_key" in str(info.value)


def test_command_line_wrong_type_fails_at_parsing(config_path):
    with pytest.raises(flags.IllegalFlagValueError):
        parse_flags(
            ["prog", f"--config={config_path('late_sdd')}:smoke", "--config.train.batch_size=many"]
        )


def _set(c, key: str, value) -> None:
    section, field = key.split(".")
    c[section][field] = value


@pytest.mark.parametrize(
    "key, value",
    [
        ("train.batch_size", -3),
        ("train.batch_size", 0),
        ("model.sdd", "middle"),
        ("model.attention", "sparse"),
        ("model.dtype", "float16"),
        ("data.clip_seconds", 0.01),
        ("data.clip_seconds", -1.0),
        ("model.num_heads", 3),  # does not divide d_model=32
        ("model.sdd_similar_dim", 32),  # leaves no discrepant channels
        ("model.sdd_temperature", 0.0),
        ("model.dropout", 1.0),
        ("model.n_mels", 60),
        ("data.max_caption_tokens", 40),  # more than the decoder's max_decode_len=32
        ("eval.decode", "sampling"),
        ("train.nonfinite", "ignore"),
        ("data.no_change_fraction", 1.0),
        ("data.no_change_fraction", -0.1),
        ("eval.extra_metrics", "fense,bleu"),
    ],
)
def test_invalid_value_names_the_key(smoke_config, key, value):
    _set(smoke_config, key, value)
    # Fails with the key it was given, or (max_caption_tokens) the field it contradicts.
    with pytest.raises(config_lib.ConfigError, match=r"config\.(data|model|train|eval)\.") as info:
        config_lib.validate(smoke_config)
    expected = "model.max_decode_len" if key == "data.max_caption_tokens" else key
    assert f"config.{expected}=" in str(info.value)


def test_clip_too_short_for_byola_pooling_says_minimum(smoke_config):
    smoke_config.data.clip_seconds = 0.01
    with pytest.raises(config_lib.ConfigError, match="data.clip_seconds") as info:
        config_lib.validate(smoke_config)
    assert "at least" in str(info.value)
    # The minimum it names is accepted: >= 8 mel frames, i.e. one frame after 3 poolings.
    minimum = config_lib.min_clip_samples(smoke_config)
    assert minimum // smoke_config.model.hop_length + 1 >= 8
    smoke_config.data.clip_seconds = minimum / smoke_config.data.sample_rate
    config_lib.validate(smoke_config)


def test_batch_must_divide_over_devices(smoke_config):
    smoke_config.train.batch_size = 8
    config_lib.validate(smoke_config, num_devices=8)
    with pytest.raises(config_lib.ConfigError, match=r"config\.train\.batch_size=8") as info:
        config_lib.validate(smoke_config, num_devices=3)
    assert "3" in str(info.value)
    smoke_config.train.batch_size = 9
    smoke_config.eval.batch_size = 10
    with pytest.raises(config_lib.ConfigError, match=r"config\.eval\.batch_size=10"):
        config_lib.validate(smoke_config, num_devices=3)


def test_infonce_needs_two_pairs_only_with_sdd(smoke_config):
    smoke_config.train.batch_size = 1
    with pytest.raises(config_lib.ConfigError, match=r"config\.train\.batch_size=1"):
        config_lib.validate(smoke_config)
    smoke_config.model.sdd = "none"
    config_lib.validate(smoke_config)


def test_real_dataset_needs_existing_dirs(smoke_config, tmp_path):
    smoke_config.data.name = "audio_diff_caps"
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.audio_dir=''"):
        config_lib.validate(smoke_config)
    smoke_config.data.audio_dir = str(tmp_path / "missing")
    smoke_config.data.csv_dir = str(tmp_path)
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.audio_dir=") as info:
        config_lib.validate(smoke_config)
    assert "does not exist" in str(info.value)
    smoke_config.data.audio_dir = str(tmp_path)
    config_lib.validate(smoke_config)


def test_model_fields_are_the_shape_determining_ones(smoke_config):
    fields = config_lib.model_fields(smoke_config)
    assert fields["model.d_model"] == smoke_config.model.d_model
    assert fields["model.sdd"] == "late"
    # Dropout and learning rate do not change parameter shapes, so they are not compared.
    assert "model.dropout" not in fields


def _converted_byola(root: Path, *, dim: int, channels: int = 8, n_mels: int = 64) -> Path:
    """A directory written by the real converter from a random official-format checkpoint."""
    path = Path(__file__).resolve().parents[1] / "tools" / "make_byola_fixture.py"
    spec = importlib.util.spec_from_file_location("make_byola_fixture", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    pth = root / f"byola_d{dim}.pth"
    sd = tool.random_state_dict(dim=dim, channels=channels, n_mels=n_mels, seed=0)
    tool.save_torch_state_dict(str(pth), sd)
    out = root / f"byola_d{dim}"
    meta = byola_weights.convert_checkpoint(str(pth), str(out))
    assert meta["dim"] == dim
    return out


def test_byola_init_of_another_shape_names_the_field_both_values_and_the_fix(
    smoke_config, tmp_path
):
    assert (smoke_config.model.byola_channels, smoke_config.model.byola_dim) == (8, 32)
    converted = _converted_byola(tmp_path, dim=16)
    smoke_config.model.byola_init = str(converted)
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.validate(smoke_config)
    message = str(info.value)
    meta = converted / config_lib.BYOLA_META_FILE
    assert f"model.byola_dim is 16 in {meta} but 32 in the config" in message
    assert "--config.model.byola_dim=16" in message
    # Only the field that differs is named.
    assert "byola_channels" not in message and "n_mels" not in message
    smoke_config.model.byola_dim = 16
    config_lib.validate(smoke_config)


def test_byola_init_of_the_configured_shape_passes(smoke_config, tmp_path):
    converted = _converted_byola(tmp_path, dim=smoke_config.model.byola_dim)
    smoke_config.model.byola_init = str(converted)
    config_lib.validate(smoke_config)
    # The params.npz file itself names the same weights.
    smoke_config.model.byola_init = str(converted / config_lib.BYOLA_PARAMS_FILE)
    config_lib.validate(smoke_config)


def test_byola_init_without_readable_meta_json_says_to_reconvert(smoke_config, tmp_path):
    converted = _converted_byola(tmp_path, dim=smoke_config.model.byola_dim)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(converted / config_lib.BYOLA_PARAMS_FILE, bare)
    meta = bare / config_lib.BYOLA_META_FILE
    smoke_config.model.byola_init = str(bare)
    for content in (None, "{not json", json.dumps({"dim": 32})):
        if content is not None:
            meta.write_text(content)
        with pytest.raises(config_lib.ConfigError, match=r"config\.model\.byola_init=") as info:
            config_lib.validate(smoke_config)
        assert str(meta) in str(info.value) and "tools/convert_byola.py" in str(info.value)
    # A directory without the weights themselves.
    smoke_config.model.byola_init = str(tmp_path)
    with pytest.raises(config_lib.ConfigError, match=config_lib.BYOLA_PARAMS_FILE):
        config_lib.validate(smoke_config)


def test_byola_init_takes_the_log_mel_statistics_of_pretrained_weights(tmp_path):
    from adc_jax import config as config_lib

    c = config_lib.base_config("smoke")
    folder = tmp_path / "encoder"
    folder.mkdir()
    meta = {"n_mels": 64, "channels": 8, "dim": 32}
    (folder / "meta.json").write_text(json.dumps(meta))
    c.model.byola_init = str(folder)
    assert not config_lib.apply_byola_init_norm(c)  # official weights: no statistics recorded
    assert c.model.norm_mean == config_lib.base_config("smoke").model.norm_mean
    (folder / "meta.json").write_text(json.dumps({**meta, "norm_mean": 0.25, "norm_std": 2.5}))
    assert config_lib.apply_byola_init_norm(c)
    assert (c.model.norm_mean, c.model.norm_std) == (0.25, 2.5)
    c.model.byola_init_norm = False
    c.model.norm_mean = -1.0
    assert not config_lib.apply_byola_init_norm(c) and c.model.norm_mean == -1.0


def test_pairs_without_a_difference_need_a_generated_dataset(smoke_config):
    smoke_config.data.name = "adiff"
    smoke_config.data.no_change_fraction = 0.1
    with pytest.raises(config_lib.ConfigError, match="only the generated datasets"):
        config_lib.validate(smoke_config)
