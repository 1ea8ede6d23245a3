"""Tests of `tools/supervised_reference.py`: the encoder trained with the pretraining clips'
labels, exported in the format the linear probe and the captioner read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import clip_fixtures
import numpy as np
import pytest
from tool_modules import load_tool

from adc_jax.pretrain import config as pretrain_config
from adc_jax.pretrain import step as pretrain_step

REPO = Path(__file__).resolve().parents[1]


reference = load_tool("supervised_reference")
linear_probe = load_tool("linear_probe")


def smoke_config(tmp_path, **data):
    config = pretrain_config.pretrain_config("smoke")  # what configs/byola_pretrain.py:smoke gives
    config.data.data_dir = str(tmp_path / "data")
    config.train.log_every = 5
    for key, value in data.items():
        config.data[key] = value
    return config


def test_learns_the_labels_and_exports_an_encoder_the_probe_loads(tmp_path, capsys):
    config = smoke_config(tmp_path)
    config.train.num_steps = 60
    config.train.learning_rate = 3e-3
    result = reference.train(config, str(tmp_path / "w"))

    rows = [json.loads(line) for line in open(tmp_path / "w" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == list(range(5, 61, 5))
    # 16 clips of 10 classes: the classifier memorises them, so the loss falls well below the
    # chance level ln(10) = 2.30 of the first steps.
    assert rows[0]["loss"] > 1.5
    assert np.mean([r["loss"] for r in rows[-3:]]) < 0.5 * rows[0]["loss"]
    assert result["classes"] == tuple(sorted(result["classes"])) and len(result["classes"]) == 10

    meta = json.load(open(os.path.join(result["encoder_dir"], "meta.json")))
    assert meta["source"] == reference.SOURCE and meta["step"] == 60
    assert (meta["channels"], meta["dim"]) == (config.model.byola_channels, config.model.byola_dim)
    # The statistics it normalised with are stored, estimated from the data (not the defaults).
    assert meta["norm_mean"] != pytest.approx(config.model.norm_mean)
    encoder = linear_probe.load_encoder(result["encoder_dir"], "supervised")
    assert encoder.shape == (64, config.model.byola_channels, config.model.byola_dim)
    assert (encoder.norm_mean, encoder.norm_std) == (meta["norm_mean"], meta["norm_std"])
    assert encoder.name == "supervised" and encoder.module.dim == meta["dim"]
    rows = linear_probe.main(
        [
            f"--supervised={result['encoder_dir']}",
            "--seeds=0",
            "--train_per_class=3",
            "--test_per_class=2",
        ]
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if "30/20" in line]
    assert lines[0].startswith(f"supervised: {result['encoder_dir']}")
    assert lines[1].startswith("random init, seed 0") and len(rows) == 2


def test_audio_folder_labels_are_the_folder_names(tmp_path):
    clip_fixtures.write_folders(str(tmp_path / "audio"), ["Dog", "Rain"], per_class=3, seconds=1.0)
    config = smoke_config(tmp_path, name="audio_folder", audio_dir=str(tmp_path / "audio"))
    data, classes = reference.labelled_clips(config)
    assert classes == ("Dog", "Rain")
    # The 5% validation split takes at least one file; every other file is a training clip.
    assert 4 <= len(data["label"]) <= 5 and set(data["label"].tolist()) == {0, 1}
    assert data["wav"].dtype == np.int16 and data["wav"].shape[1] == 16000
    assert (data["wav_len"] > 0).all()


def test_clips_without_one_class_each_are_refused(tmp_path):
    with pytest.raises(ValueError, match="synthetic_events"):
        reference.labelled_clips(smoke_config(tmp_path, name="synthetic_clips"))
    flat = tmp_path / "flat"
    flat.mkdir()
    for j in range(3):
        clip_fixtures._write(
            str(flat / f"clip_{j}.wav"), clip_fixtures.event_wave(0, j, 1.0), 44100
        )
    config = smoke_config(tmp_path, name="audio_folder", audio_dir=str(flat))
    with pytest.raises(ValueError, match="own sub-folder"):
        reference.labelled_clips(config)


def test_export_records_the_source_it_is_given(tmp_path):
    config = smoke_config(tmp_path)
    model = reference.Classifier(config, 3, reference.nnx.Rngs(0))
    meta = pretrain_step.export_encoder(model.encoder, config, str(tmp_path / "e"), source="x")
    assert meta["source"] == "x"
    default = pretrain_step.export_encoder(model.encoder, config, str(tmp_path / "f"))
    assert default["source"] == pretrain_step.EXPORT_SOURCE


def test_command_line_trains_and_exports(tmp_path):
    # The flags are defined only when the file runs as a script: importing it here beside
    # adc_jax.pretrain (which defines --config too) must not clash, and the script must still run.
    import adc_jax.pretrain  # noqa: F401

    data_dir = tmp_path / "data"
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "supervised_reference.py"),
            f"--config={REPO / 'configs' / 'byola_pretrain.py'}:smoke",
            f"--config.data.data_dir={data_dir}",
            f"--workdir={tmp_path / 'w'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Trained 6 steps on 10 classes" in out.stdout
    assert json.load(open(tmp_path / "w" / "encoder" / "meta.json"))["source"] == reference.SOURCE
