"""Sharded builds (`adc_jax.build_data`, `writer.ShardedBuild`): shards made independently and
combined give the dataset a build in one piece gives, file for file; a missing, unfinished or
foreign shard stops the combination naming the command that makes it."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import pytest
from adiff_fixture import make_adiff_fixture
from clip_fixtures import ESC_CLASSES, write_folders, write_roots
from conftest import load_config

from adc_jax import build_data
from adc_jax.config_checks import ConfigError
from adc_jax.data import clip_store, registry
from adc_jax.data import writer as writer_lib
from adc_jax.pretrain import clips

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _files(builder) -> dict[str, bytes]:
    """Every file of a built dataset by name (array_record shards, dataset_info.json, ...)."""
    out = {}
    for name in sorted(os.listdir(builder.data_dir)):
        with open(os.path.join(builder.data_dir, name), "rb") as f:
            out[name] = f.read()
    return out


def _sharded(config, count: int, shard_dir: str = "") -> None:
    """Writes the shards in reverse order (any order works), then combines them."""
    for index in reversed(range(count)):
        message = build_data.build(config, writer_lib.ShardedBuild(count, index, shard_dir))
        assert message.startswith(f"Wrote shard {index} of {count} to ")
    message = build_data.build(config, writer_lib.ShardedBuild(count, None, shard_dir))
    assert " is built in " in message and "no longer needed" in message


def _synthetic(tmp_path, name: str):
    config = load_config("late_sdd", "smoke")
    config.data.num_train, config.data.num_validation, config.data.num_eval = 7, 2, 3
    config.data.clip_seconds = 0.5
    config.data.data_dir = str(tmp_path / name)
    return config


def _adiff(fx, tmp_path, name: str):
    config = load_config("adiff", "cld,smoke")
    config.data.csv_dir, config.data.audio_dir = fx.csv_dir, fx.audio_dir
    config.data.data_dir = str(tmp_path / name)
    return config


def _clip_pairs(roots, tmp_path, name: str):
    config = load_config("late_sdd", "smoke")
    config.data.name = "clip_pairs"
    config.data.clips_dir, config.data.background_dir = roots["esc"], roots["fsd"]
    config.data.clip_classes = ",".join(ESC_CLASSES)
    config.data.num_train, config.data.num_validation, config.data.num_eval = 7, 2, 3
    config.data.data_dir = str(tmp_path / name)
    return config


@pytest.mark.parametrize("count", [2, 3])
def test_synthetic_shards_combine_into_the_same_files(tmp_path, count):
    whole = registry.load_builder(_synthetic(tmp_path, "whole"))
    config = _synthetic(tmp_path, "sharded")
    _sharded(config, count)
    combined = registry.load_builder(config)
    assert _files(combined) == _files(whole)


@pytest.mark.parametrize("count", [2, 3])
def test_adiff_shards_with_their_clip_stores_combine_into_the_same_files(tmp_path, count):
    fx = make_adiff_fixture(str(tmp_path / "fx"))
    whole = registry.load_builder(_adiff(fx, tmp_path, "whole"))
    assert clip_store.has_clip_store(whole, "train")
    config = _adiff(fx, tmp_path, "sharded")
    _sharded(config, count, shard_dir=str(tmp_path / "shards"))
    combined = registry.load_builder(config)
    assert _files(combined) == _files(whole)
    a, b = clip_store.pair_source(whole, "eval"), clip_store.pair_source(combined, "eval")
    assert [bytes(r["audio2"]) for r in a] == [bytes(r["audio2"]) for r in b]


@pytest.mark.parametrize("count", [2, 3])
def test_clip_pairs_shards_combine_into_the_same_files(tmp_path, count):
    roots = write_roots(str(tmp_path / "recordings"))
    whole = registry.load_builder(_clip_pairs(roots, tmp_path, "whole"))
    config = _clip_pairs(roots, tmp_path, "sharded")
    _sharded(config, count)
    assert _files(registry.load_builder(config)) == _files(whole)


def test_combining_checks_every_shard_first(tmp_path):
    config = _synthetic(tmp_path, "data")
    shard_dir = str(tmp_path / "shards")
    build_data.build(config, writer_lib.ShardedBuild(2, 0, shard_dir))
    combine = writer_lib.ShardedBuild(2, None, shard_dir)
    with pytest.raises(writer_lib.MissingShard, match=r"Shard 1 of 2 .* is missing.*--shard=1"):
        build_data.build(config, combine)
    # A shard folder without its shard.json was interrupted.
    os.makedirs(os.path.join(shard_dir, "shard-00001-of-00002"))
    with pytest.raises(writer_lib.MissingShard, match="is unfinished"):
        build_data.build(config, combine)
    # A shard of another variant (another seed: other data) is refused.
    other = _synthetic(tmp_path, "data")
    other.data.synth_seed = 1
    foreign = str(tmp_path / "foreign")
    build_data.build(other, writer_lib.ShardedBuild(2, 1, foreign))
    shutil.rmtree(os.path.join(shard_dir, "shard-00001-of-00002"))
    shutil.copytree(
        os.path.join(foreign, "shard-00001-of-00002"),
        os.path.join(shard_dir, "shard-00001-of-00002"),
    )
    with pytest.raises(writer_lib.MissingShard, match="other inputs or settings"):
        build_data.build(config, combine)
    # Nothing above built the dataset.
    assert not glob.glob(os.path.join(config.data.data_dir, "**", "dataset_info.json"))


def test_shard_ranges_cover_every_record_once():
    for n in (0, 1, 2, 7, 100):
        for count in (1, 2, 3, 8):
            ranges = [writer_lib.shard_range(n, i, count) for i in range(count)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def test_flags_that_do_not_fit_together_are_config_errors():
    assert build_data.sharding(None, None, False, "") is None
    assert build_data.sharding(1, 3, False, "d") == writer_lib.ShardedBuild(3, 1, "d")
    assert build_data.sharding(None, 3, True, "") == writer_lib.ShardedBuild(3, None, "")
    for args, match in (
        ((None, 2, False, ""), "needs --shard"),
        ((0, 2, True, ""), "not both"),
        ((0, None, False, ""), "need --num_shards"),
        ((2, 2, False, ""), r"shard=2 must be in \[0, num_shards=2\)"),
        ((None, 0, True, ""), "num_shards=0 must be a positive"),
    ):
        with pytest.raises(ConfigError, match=match):
            build_data.sharding(*args)


def test_the_command_line_writes_a_shard_and_a_missing_shard_exits_2(tmp_path):
    common = [
        sys.executable,
        "-m",
        "adc_jax.build_data",
        "--config=configs/late_sdd.py:smoke",
        f"--config.data.data_dir={tmp_path / 'data'}",
        "--config.data.num_train=5",
        "--config.data.clip_seconds=0.5",
        "--num_shards=2",
    ]
    done = subprocess.run(
        [*common, "--shard=0"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "Wrote shard 0 of 2" in done.stdout
    failed = subprocess.run(
        [*common, "--combine"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert failed.returncode == 2
    assert "Shard 1 of 2" in failed.stderr and "--shard=1 --num_shards=2" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert failed.stderr.count("Shard 1 of 2") == 1


def test_pretraining_audio_folder_shards_combine_into_the_same_files(tmp_path):
    """A pretraining corpus (audio_folder) builds in shards through the same writer."""
    write_folders(str(tmp_path / "corpus"), ("dog", "rain", "hen"), per_class=5, seconds=1.5)

    def config(name: str):
        c = load_config("byola_pretrain", "smoke")
        c.data.name, c.data.audio_dir = "audio_folder", str(tmp_path / "corpus")
        c.data.data_dir = str(tmp_path / name)
        return c

    whole = build_data.build(config("whole"), None)
    assert " is built in " in whole
    _sharded(config("sharded"), 2)
    a, b = (clips.load_clip_source(config(name)) for name in ("whole", "sharded"))
    assert _files(a) == _files(b)
