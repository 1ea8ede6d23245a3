"""Tests of adc_jax.caption: reading any audio file, n-best captions, the attention figure and the
command line's errors, on the session's smoke checkpoint (`reference_run`, tests/conftest.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from adc_jax import caption


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory) -> dict[str, str]:
    """Clips in unusual formats: the smoke model was trained on 1 s, 16 kHz, mono clips."""
    d = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    t = np.arange(int(0.5 * 44100)) / 44100
    left = 0.4 * np.sin(2 * np.pi * 440 * t)
    files = {
        "stereo": str(d / "stereo_44k_0.5s.wav"),
        "three": str(d / "mono_22k_3s.wav"),
        "thirty": str(d / "mono_16k_30s.wav"),
        "garbage": str(d / "garbage.wav"),
    }
    sf.write(
        files["stereo"], np.stack([left, np.zeros_like(left)], axis=1), 44100, subtype="PCM_16"
    )
    sf.write(files["three"], 0.1 * rng.standard_normal(3 * 22050), 22050)
    sf.write(files["thirty"], 0.1 * rng.standard_normal(30 * 16000), 16000)
    with open(files["garbage"], "wb") as f:
        f.write(b"RIFF\x00\x00 this is not audio " * 20)
    files["truncated"] = str(d / "truncated_2s.wav")  # a partial download: half its bytes
    sf.write(files["truncated"], 0.1 * rng.standard_normal(2 * 16000), 16000, subtype="PCM_16")
    with open(files["truncated"], "r+b") as f:
        f.truncate(44 + 16000 * 2)
    return files


def test_prepare_clip_mixes_down_resamples_and_pads(audio_files):
    clip = caption.prepare_clip(audio_files["stereo"], 16000, 16000)
    assert clip.wav.shape == (16000,) and clip.wav.dtype == np.float32
    assert clip.num_valid == 8000 and not clip.cropped
    assert clip.seconds == pytest.approx(0.5)
    # Mean of a 0.4-amplitude sine and a silent channel: RMS 0.2 / sqrt(2); then zeros.
    assert np.sqrt(np.mean(clip.wav[500:7500] ** 2)) == pytest.approx(0.2 / np.sqrt(2), rel=0.02)
    assert not np.any(clip.wav[8000:])


def test_a_truncated_file_is_used_with_the_warning_the_builders_give(audio_files):
    clip = caption.prepare_clip(audio_files["truncated"], 16000, 32000)
    assert clip.num_valid == 16000 and clip.header_seconds == pytest.approx(2.0)
    assert "truncated: it holds 1.00 s of the 2.00 s its header promises" in (
        clip.truncation_message()
    )
    assert caption.prepare_clip(audio_files["stereo"], 16000, 16000).truncation_message() is None


def test_long_files_are_cropped_with_a_warning(reference_run, audio_files):
    captioner = caption.Captioner.from_workdir(reference_run)
    assert captioner.clip_seconds == 1.0
    with pytest.warns(caption.CropWarning, match=r"30\.00 s long .* first 1\.00 s"):
        clip = captioner.prepare(audio_files["thirty"])
    assert clip.cropped and clip.num_valid == 16000 and clip.wav.shape == (16000,)
    with pytest.warns(caption.CropWarning, match=r"3\.00 s long"):
        results = captioner.caption_files(
            audio_files["three"], audio_files["stereo"], beam_size=2, nbest=2
        )
    assert len(results) == 2 and results[0][1] >= results[1][1]
    with pytest.raises(caption.CaptionError, match="nbest"):
        captioner.caption(clip, clip, beam_size=2, nbest=3)
    with pytest.warns(caption.TruncationWarning, match="truncated_2s.wav is truncated"):
        captioner.prepare(audio_files["truncated"])


def test_cli_prints_nbest_and_writes_the_attention_png(
    reference_run, audio_files, tmp_path, capsys
):
    png = str(tmp_path / "attention.png")
    rc = caption.main(
        [
            f"--workdir={reference_run}",
            audio_files["stereo"],
            audio_files["thirty"],
            "--beam_size=4",
            "--nbest=3",
            f"--attention_png={png}",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    lines = [ln for ln in out.splitlines() if ln.strip()[:2] in ("1.", "2.", "3.")]
    assert len(lines) == 3
    scores = [float(ln.rsplit("score", 1)[1]) for ln in lines]
    assert scores == sorted(scores, reverse=True)
    warnings = [ln for ln in err.splitlines() if ln.startswith("Warning:")]
    assert len(warnings) == 1 and "mono_16k_30s.wav" in warnings[0]
    assert os.path.getsize(png) > 20_000
    import matplotlib.image

    height, width = matplotlib.image.imread(png).shape[:2]
    assert 1000 <= width <= 1400 and 500 <= height <= 1000  # one encoder layer at smoke size


@pytest.mark.parametrize(
    "which, expected", [("missing", "does not exist"), ("garbage", "Cannot read audio file")]
)
def test_cli_bad_audio_file_is_a_one_line_error(
    reference_run, audio_files, tmp_path, capsys, which, expected
):
    path = str(tmp_path / "nope.wav") if which == "missing" else audio_files["garbage"]
    rc = caption.main([f"--workdir={reference_run}", audio_files["stereo"], path])
    out, err = capsys.readouterr()
    assert rc == 1 and not out
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("Error:") and expected in err and path in err


def test_cli_workdir_errors(reference_run, audio_files, tmp_path, capsys):
    rc = caption.main([f"--workdir={tmp_path}", audio_files["stereo"], audio_files["stereo"]])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert str(tmp_path) in err and "config.json" in err
    import shutil

    for name in ("config.json", "vocab.json"):
        shutil.copy(os.path.join(reference_run, name), tmp_path / name)
    rc = caption.main([f"--workdir={tmp_path}", audio_files["stereo"], audio_files["stereo"]])
    err = capsys.readouterr().err
    assert rc == 1 and "No checkpoints in" in err and str(tmp_path) in err
    rc = caption.main([f"--workdir={reference_run}", "--beam_size=2", "--nbest=3", "a", "b"])
    assert rc == 2 and "--nbest" in capsys.readouterr().err
