"""Tests of adc_jax.data.audio_io: decoding, mixing, resampling, failures, truncation checks."""

from __future__ import annotations

import logging as std_logging
import os

import numpy as np
import pytest
import soundfile as sf

from adc_jax.data import audio_io
from adc_jax.data.audio_io import AudioError, check_clip_lengths, load_audio, probe_audio


def _sine(freq: float, seconds: float, rate: int, amp: float) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_stereo_44k1_int16_becomes_16k_mono_of_right_length(tmp_path):
    # Left: 440 Hz at 0.5 full scale; right: silence. The mono mix is the sine at 0.25.
    left = _sine(440.0, 0.5, 44100, 0.5)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    path = str(tmp_path / "stereo.wav")
    sf.write(path, np.round(stereo * 32767).astype(np.int16), 44100, subtype="PCM_16")

    wav = load_audio(path, 16000)

    assert wav.dtype == np.float32 and wav.ndim == 1
    assert wav.shape[0] == 8000  # 0.5 s at 16 kHz
    assert np.all(np.abs(wav) <= 1.0)
    expected = _sine(440.0, 0.5, 16000, 0.25)
    # Compare away from the edges, where the resampling filter has no full support.
    np.testing.assert_allclose(wav[200:-200], expected[200:-200], atol=5e-3)


def test_same_rate_float_flac_passes_through(tmp_path):
    x = _sine(1000.0, 0.25, 16000, 0.9)
    wav_path, flac_path = str(tmp_path / "f.wav"), str(tmp_path / "f.flac")
    sf.write(wav_path, x, 16000, subtype="FLOAT")
    sf.write(flac_path, x, 16000, subtype="PCM_24")
    np.testing.assert_array_equal(load_audio(wav_path, 16000), x)
    np.testing.assert_allclose(load_audio(flac_path, 16000), x, atol=1e-6)


def test_float_file_above_full_scale_is_clipped(tmp_path):
    path = str(tmp_path / "loud.wav")
    sf.write(path, np.array([0.5, 1.5, -2.0], np.float32), 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path), [0.5, 1.0, -1.0])


def _write_nan(path: str) -> None:
    x = np.zeros(100, np.float32)
    x[10] = np.nan
    sf.write(path, x, 16000, subtype="FLOAT")


def _write_corrupt(path: str) -> None:
    with open(path, "wb") as f:
        f.write(np.random.default_rng(1).bytes(4096))


def _write_zero_bytes(path: str) -> None:
    open(path, "wb").close()


def _write_zero_samples(path: str) -> None:
    sf.write(path, np.zeros((0, 1), np.float32), 44100)


@pytest.mark.parametrize(
    "writer, reason",
    [
        (None, "does not exist"),
        (_write_zero_bytes, "empty"),
        (_write_zero_samples, "empty"),
        (_write_corrupt, "Cannot read"),
        (_write_nan, "NaN"),
    ],
)
def test_bad_files_raise_audio_error_naming_path_and_key(tmp_path, writer, reason):
    path = str(tmp_path / "bad.wav")
    if writer is not None:
        writer(path)
    with pytest.raises(AudioError) as info:
        load_audio(path, 16000, key="pair_007")
    message = str(info.value)
    assert path in message and "pair_007" in message and reason in message
    assert isinstance(info.value, ValueError)


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="not a file"):
        load_audio(str(tmp_path))
    assert os.path.isdir(tmp_path)


# (name, soundfile format, subtype, endian): WAV flavours whose chunk headers probe_audio parses.
WAV_KINDS = [
    ("riff_pcm16.wav", "WAV", "PCM_16", "FILE"),
    ("riff_pcm24.wav", "WAV", "PCM_24", "FILE"),
    ("riff_float.wav", "WAV", "FLOAT", "FILE"),
    ("riff_ulaw.wav", "WAV", "ULAW", "FILE"),
    ("rifx_pcm16.wav", "WAV", "PCM_16", "BIG"),
    ("wavex_pcm24.wav", "WAVEX", "PCM_24", "FILE"),
    ("rf64_float.wav", "RF64", "FLOAT", "FILE"),
]
FRAMES, RATE = 8000, 8000  # 1 s


def _noise(channels: int = 2) -> np.ndarray:
    return (np.random.default_rng(2).standard_normal((FRAMES, channels)) * 0.2).astype(np.float32)


def _write(path, fmt: str, subtype: str, endian: str = "FILE") -> str:
    sf.write(str(path), _noise(), RATE, format=fmt, subtype=subtype, endian=endian)
    return str(path)


def _cut(path: str, fraction: float) -> str:
    """Keeps the first `fraction` of the file's bytes (a partial download), in place."""
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * fraction)])
    return path


@pytest.mark.parametrize("name, fmt, subtype, endian", WAV_KINDS)
def test_probe_of_a_complete_wav(tmp_path, name, fmt, subtype, endian):
    probe = probe_audio(_write(tmp_path / name, fmt, subtype, endian))
    assert (probe.sample_rate, probe.channels) == (RATE, 2)
    assert probe.frames == probe.header_frames == FRAMES
    assert not probe.truncated and probe.seconds == 1.0


@pytest.mark.parametrize("name, fmt, subtype, endian", WAV_KINDS)
def test_a_cut_wav_is_truncated_and_load_audio_still_reads_what_is_there(
    tmp_path, name, fmt, subtype, endian
):
    path = _cut(_write(tmp_path / name, fmt, subtype, endian), 0.6)
    present = sf.info(path).frames  # libsndfile counts the frames present, silently
    assert 0 < present < FRAMES
    probe = probe_audio(path, key="k1")
    assert probe.truncated
    assert (probe.frames, probe.header_frames) == (present, FRAMES)
    assert probe.header_seconds == 1.0 and probe.seconds == present / RATE
    wav = load_audio(path, RATE)
    assert wav.shape == (present,)


def test_wav_chunks_before_data_and_unknown_data_sizes(tmp_path):
    path = str(tmp_path / "meta.wav")
    with sf.SoundFile(path, "w", RATE, 1, "PCM_16") as f:
        f.title = "a LIST chunk before the data chunk"
        f.write(_noise(1))
    complete = probe_audio(path)
    assert (complete.frames, complete.header_frames) == (FRAMES, FRAMES)
    assert probe_audio(_cut(path, 0.5)).truncated
    # A streamed WAV declares 0xFFFFFFFF data bytes: the header does not say, so not truncated.
    data = bytearray(open(_write(tmp_path / "streamed.wav", "WAV", "PCM_16"), "rb").read())
    at = data.index(b"data") + 4
    data[at : at + 4] = b"\xff\xff\xff\xff"
    with open(tmp_path / "streamed.wav", "wb") as f:
        f.write(data[: len(data) // 2])
    streamed = probe_audio(str(tmp_path / "streamed.wav"))
    assert not streamed.truncated and streamed.frames == sf.info(streamed.path).frames > 0


def test_a_cut_flac_is_truncated_from_its_tail(tmp_path):
    frames = 5 * FRAMES  # ten FLAC frames
    path = str(tmp_path / "clip.flac")
    sf.write(path, np.tile(_noise(), (5, 1)), RATE, subtype="PCM_16")
    full = probe_audio(path)
    assert (full.frames, full.header_frames, full.truncated) == (frames, frames, False)
    _cut(path, 0.5)
    assert sf.info(path).frames == frames  # STREAMINFO still promises them all
    probe = probe_audio(path)
    assert probe.truncated and probe.header_frames == frames
    assert frames * 0.25 < probe.frames < frames * 0.55  # about half of them decode
    with pytest.raises(AudioError, match="Cannot read"):  # as before: libsndfile cannot decode it
        load_audio(path, RATE)


@pytest.mark.parametrize("fmt, subtype", [("OGG", "VORBIS"), ("WAV", "IMA_ADPCM")])
def test_other_codecs_are_probed_from_what_soundfile_reports(tmp_path, fmt, subtype):
    path = str(tmp_path / f"clip.{fmt.lower()}")
    sf.write(path, _noise(1), RATE, format=fmt, subtype=subtype)
    probe = probe_audio(path)
    assert probe.frames == probe.header_frames == sf.info(path).frames >= FRAMES
    assert probe.channels == 1 and not probe.truncated


@pytest.mark.parametrize(
    "writer, reason",
    [
        (None, "does not exist"),
        (_write_zero_bytes, "empty"),
        (_write_zero_samples, "empty"),
        (_write_corrupt, "Cannot read"),
    ],
)
def test_probe_rejects_bad_files_like_load_audio(tmp_path, writer, reason):
    path = str(tmp_path / "bad.wav")
    if writer is not None:
        writer(path)
    with pytest.raises(AudioError) as info:
        probe_audio(path, key="pair_007")
    message = str(info.value)
    assert path in message and "pair_007" in message and reason in message


def test_a_wav_cut_before_its_first_frame_is_empty_and_says_what_was_promised(tmp_path):
    path = _write(tmp_path / "cut.wav", "WAV", "PCM_16")
    _cut(path, 46 / os.path.getsize(path))  # the 44-byte header and half a frame
    with pytest.raises(AudioError, match=f"0 samples of the {FRAMES} its header promises"):
        probe_audio(path)


def _clip(tmp_path, name: str, seconds: float, cut: float | None = None) -> str:
    path = str(tmp_path / name)
    sf.write(path, np.zeros(int(seconds * 1000), np.int16), 1000, subtype="PCM_16")
    return _cut(path, cut) if cut else path


def test_check_clip_lengths_counts_and_warns_once(tmp_path, caplog, monkeypatch):
    full = _clip(tmp_path, "full.wav", 10.0)
    items = [
        ("row 2", full),
        ("row 3", _clip(tmp_path, "partial.wav", 10.0, cut=0.8)),  # truncated, 8 s
        ("row 4", _clip(tmp_path, "short.wav", 3.0)),
        ("row 5", _clip(tmp_path, "both.wav", 10.0, cut=0.2)),  # truncated and short, 2 s
        ("row 6", full),  # the same file again: probed once, counted twice
    ]
    probed = []
    real = audio_io.probe_audio
    monkeypatch.setattr(audio_io, "probe_audio", lambda p, **k: probed.append(p) or real(p, **k))
    with caplog.at_level(std_logging.INFO):
        report = check_clip_lengths(items, dataset="Toy", nominal_seconds=10.0, min_fraction=0.0)
    assert sorted(probed) == sorted(set(p for _, p in items))
    assert report.dataset == "Toy" and report.nominal_seconds == 10.0 and report.checked == 5
    assert [w for w, _ in report.truncated] == ["row 3", "row 5"]
    assert [w for w, _ in report.short] == ["row 4", "row 5"]
    assert report.truncated[0][1].seconds == pytest.approx(8.0, abs=0.01)
    warnings = [r for r in caplog.records if r.levelno == std_logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "of 5 audio files, 2 are truncated" in text and "2 are shorter than 5 s" in text
    assert "row 3: " + items[1][1] in text and "of the 10.00 s its header promises" in text
    assert "row 4: " + items[2][1] + " (3.00 s)" in text and "data.min_clip_fraction" in text


def test_check_clip_lengths_fails_on_clips_below_min_fraction(tmp_path, caplog):
    long_but_cut = _clip(tmp_path, "partial.wav", 10.0, cut=0.8)
    items = [("key 'a'", long_but_cut), ("key 'b'", _clip(tmp_path, "two.wav", 2.0))]
    # A truncated file alone never fails; 2 s < 0.5 * 10 s does.
    check_clip_lengths(items[:1], dataset="Toy", nominal_seconds=10.0, min_fraction=0.5)
    with caplog.at_level(std_logging.WARNING), pytest.raises(AudioError) as info:
        check_clip_lengths(items, dataset="Toy", nominal_seconds=10.0, min_fraction=0.5)
    message = str(info.value)
    assert "1 of 2 audio files are shorter than 5 s" in message
    assert f"key 'b': {items[1][1]} (2.00 s)" in message and "key 'a'" not in message
    assert "data.min_clip_fraction=0" in message
    assert "1 are shorter than 5 s" in caplog.text  # the warning comes first
    report = check_clip_lengths(items, dataset="Toy", nominal_seconds=10.0, min_fraction=0.1)
    assert len(report.short) == 1


def test_no_warning_when_every_clip_is_complete(tmp_path, caplog):
    items = [(f"row {i}", _clip(tmp_path, f"c{i}.wav", 10.0)) for i in range(3)]
    with caplog.at_level(std_logging.INFO):
        report = check_clip_lengths(items, dataset="Toy", nominal_seconds=10.0, min_fraction=0.9)
    assert report.truncated == report.short == [] and report.checked == 3
    assert not [r for r in caplog.records if r.levelno >= std_logging.WARNING]
    assert "3 audio files checked" in caplog.text


def test_check_clip_lengths_names_an_unreadable_file_and_rejects_bad_arguments(tmp_path):
    good = _clip(tmp_path, "good.wav", 10.0)
    items = [("row 2", good), ("row 3", str(tmp_path / "gone.wav"))]
    with pytest.raises(
        AudioError, match="Toy: 1 audio file cannot be used, at row 3: .*gone.wav.* does not exist"
    ):
        check_clip_lengths(items, dataset="Toy", nominal_seconds=10.0, min_fraction=0.0)
    with pytest.raises(ValueError, match="min_fraction"):
        check_clip_lengths(items[:1], dataset="Toy", nominal_seconds=10.0, min_fraction=1.5)
    with pytest.raises(ValueError, match="nominal_seconds"):
        check_clip_lengths(items[:1], dataset="Toy", nominal_seconds=0.0, min_fraction=0.0)


# ------------------------------------------------------------- files named for another format


def _mp3_named_wav(path: str, lead: bytes = b"\0" * 64) -> np.ndarray:
    """A valid MP3 (as libsndfile writes it) with bytes before its first frame, named .wav:
    libsndfile then recognises it only by an .mp3 name."""
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    mp3 = path + ".mp3"
    sf.write(mp3, x, 16000, format="MP3")
    with open(mp3, "rb") as f:
        data = f.read()
    os.remove(mp3)
    with open(path, "wb") as f:
        f.write(lead + data)
    return x


def test_an_mp3_named_wav_is_read_by_its_content_and_named_in_the_length_check(tmp_path, caplog):
    path = str(tmp_path / "clip.wav")
    _mp3_named_wav(path)
    with pytest.raises(sf.LibsndfileError):  # what libsndfile alone does with it
        sf.read(path)
    assert audio_io.sniff_format(path)[:2] == ("MP3", ".mp3")
    wav = load_audio(path, 16000)
    assert abs(wav.shape[0] - 16000) < 2000 and np.abs(wav).max() > 0.2
    probe = probe_audio(path)
    assert probe.content_format == "MP3" and not probe.truncated
    with caplog.at_level(std_logging.WARNING):
        check_clip_lengths([("row 2", path)], dataset="Toy", nominal_seconds=1.0, min_fraction=0)
    assert "hold another format than their names say" in caplog.text
    assert "clip.wav holds MP3" in caplog.text


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"<!DOCTYPE html><html><body>Forbidden</body></html>", "is text, not audio"),
        (b"\0" * 4096, "holds only zero bytes"),
        (b"\0\0\0\x20ftypM4A " + b"\0" * 200, "holds MP4 audio"),
        (b"RIFF\x10\0\0\0WAVEfmt " + b"\1" * 40, "looks like WAV"),
        (bytes(range(7, 256)) * 8, "is in no format libsndfile reads"),
    ],
)
def test_an_unreadable_file_says_what_its_content_is(tmp_path, content, expected):
    path = str(tmp_path / "x.wav")
    with open(path, "wb") as f:
        f.write(content)
    for read in (load_audio, probe_audio):
        with pytest.raises(AudioError, match=f"Cannot read audio file .*x.wav.*: it {expected}"):
            read(path)
