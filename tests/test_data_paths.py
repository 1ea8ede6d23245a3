"""Tests of remote paths (adc_jax/data/paths.py): which settings take gs://-style paths, through
which library, and the refusal naming the setting where a local file is needed.

No bucket can be reached here, so the remote data_dir code path (tfds' epath reads and grain's
array_record reader, nothing built, no file lock) runs on a local copy of a build with
`paths.is_remote` answering True: the same calls a gs:// data_dir makes."""

from __future__ import annotations

import importlib.util
import os
import shutil

import ml_collections
import numpy as np
import pytest
from adiff_fixture import make_adiff_fixture

from adc_jax import cli, rundir
from adc_jax.data import clip_store, paths, vocab
from adc_jax.data import writer as writer_lib
from adc_jax.data.adiff import build_adiff
from adc_jax.data.audiodiffcaps import build_audio_diff_caps
from adc_jax.data.clip_pairs import ClipPairsSpec
from adc_jax.data.errors import DataError
from adc_jax.data.synthetic import builder as synthetic
from adc_jax.pretrain.clips import AudioFolderSpec

SPEC = synthetic.SyntheticSpec(num_train=4, num_validation=2, num_eval=2, clip_seconds=1.0, seed=0)


def test_remote_paths_are_told_from_local_ones():
    for path in ("gs://bucket/data", "s3://b/x", "az://c/d", "hf://datasets/x", "memory://x"):
        assert paths.is_remote(path), path
    for path in ("", None, "/data", "data/gs", "~/gs:/x", "C:/data", "./gs:/bucket"):
        assert not paths.is_remote(path), path


def test_source_folders_and_workdir_refuse_remote_paths_naming_the_setting(tmp_path):
    with pytest.raises(paths.RemotePathError, match=r"data\.clips_dir='gs://b/esc'.*libsndfile"):
        ClipPairsSpec(clips_dir="gs://b/esc")
    with pytest.raises(paths.RemotePathError, match=r"data\.background_dir="):
        ClipPairsSpec(clips_dir=str(tmp_path), background_dir="gs://b/fsd")
    with pytest.raises(paths.RemotePathError, match=r"data\.audio_dir="):
        AudioFolderSpec(audio_dir="gs://b/audio", clip_seconds=2.0)
    with pytest.raises(paths.RemotePathError, match=r"--workdir='gs://b/run'.*gcsfuse"):
        rundir.read_config("gs://b/run")
    with pytest.raises(paths.RemotePathError, match=r"data\.csv_dir='gs://b/csv'"):
        build_audio_diff_caps(str(tmp_path), audio_dir=str(tmp_path), csv_dir="gs://b/csv")
    with pytest.raises(paths.RemotePathError, match=r"data\.audio_dir='s3://b/clotho'"):
        build_adiff(
            str(tmp_path), csv_dir=str(tmp_path), audio_dir="s3://b/clotho", subset="cld",
            clip_seconds=15.0,
        )  # fmt: skip
    assert issubclass(paths.RemotePathError, DataError)  # exit status 2, no traceback


def test_a_remote_workdir_exits_2_with_one_message_and_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli.prepare_workdir(
            ml_collections.ConfigDict(),
            "gs://bucket/run",
            validate=lambda config: None,
            model_fields=lambda config: {},
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("--workdir='gs://bucket/run'") == 1 and "Orbax" in err
    assert os.listdir(tmp_path) == []  # before, a local folder "gs:" was made


def test_a_dataset_built_locally_is_read_from_a_remote_data_dir(tmp_path, monkeypatch):
    local = synthetic.build_synthetic(str(tmp_path / "local"), SPEC, num_workers=1)
    bucket = tmp_path / "bucket"  # what a user copies to gs://bucket
    shutil.copytree(
        tmp_path / "local" / "synthetic_adc",
        bucket / "synthetic_adc",
        ignore=shutil.ignore_patterns(".build.lock"),
    )
    monkeypatch.setattr(paths, "is_remote", lambda path: str(path).startswith(str(bucket)))
    before = _listing(bucket)
    remote = synthetic.build_synthetic(str(bucket), SPEC, num_workers=1)
    assert remote.data_dir.startswith(str(bucket))
    for split in synthetic.SPLITS:
        a, b = local.as_data_source(split), remote.as_data_source(split)
        assert len(a) == len(b)
        for i in range(len(a)):
            np.testing.assert_array_equal(a[i]["audio2"], b[i]["audio2"])
    # Nothing was written there: no lock, no folder, no build.
    assert _listing(bucket) == before
    assert not any(".build.lock" in names for _, _, names in os.walk(bucket))
    # A variant not built there is refused, saying how to put it there.
    other = synthetic.SyntheticSpec(
        num_train=5, num_validation=2, num_eval=2, clip_seconds=1.0, seed=0
    )
    with pytest.raises(paths.RemotePathError, match=r"data\.data_dir=.*does not hold.*copy"):
        writer_lib.prepare_once(
            synthetic.SyntheticAdc,
            synthetic.SyntheticAdcConfig.from_spec(other, 1),
            str(bucket),
        )
    assert _listing(bucket) == before


def _listing(root) -> list[str]:
    return sorted(os.path.join(d, n) for d, dirs, names in os.walk(root) for n in dirs + names)


@pytest.mark.skipif(
    importlib.util.find_spec("gcsfs") is not None, reason="gcsfs would try to reach the bucket"
)
def test_a_gs_data_dir_without_gcsfs_names_the_package_to_install():
    with pytest.raises(paths.RemotePathError, match=r"data\.data_dir='gs://b/d'.*gcsfs"):
        synthetic.build_synthetic("gs://b/d", SPEC, num_workers=1)


def test_a_built_adiff_with_its_clip_stores_is_read_from_a_remote_data_dir(tmp_path, monkeypatch):
    """ADIFF (pairs naming their clips, caption files) read through the same remote path: tfds
    finds the build, the pairs and clip stores are joined, nothing is written there."""
    fx = make_adiff_fixture(str(tmp_path / "fx"), splits=("train", "eval"))
    args = dict(csv_dir=fx.csv_dir, audio_dir=fx.audio_dir, subset="cld", clip_seconds=2.0)
    local = build_adiff(str(tmp_path / "local"), num_workers=1, **args)
    bucket = tmp_path / "bucket"
    shutil.copytree(
        tmp_path / "local" / "adiff", bucket / "adiff", ignore=shutil.ignore_patterns(".build.lock")
    )
    monkeypatch.setattr(paths, "is_remote", lambda path: str(path).startswith(str(bucket)))
    before = _listing(bucket)
    remote = build_adiff(str(bucket), **args)
    for split in ("train", "eval"):
        a, b = clip_store.pair_source(local, split), clip_store.pair_source(remote, split)
        assert len(a) == len(b) > 0
        for i in range(len(a)):
            np.testing.assert_array_equal(a[i]["audio1"], b[i]["audio1"])
            np.testing.assert_array_equal(a[i]["audio2"], b[i]["audio2"])
        assert vocab.split_captions(remote, split)[0]["captions"]  # its caption file
    assert _listing(bucket) == before
