"""Reading audio files into the waveforms every adc_jax dataset and tool works with.

`load_audio` turns any file libsndfile can read (WAV int/float, FLAC, OGG, ...) at any sample rate
and channel count into one float32 mono waveform in [-1, 1] at the requested rate:
  * channels are mixed down by their mean;
  * the sample rate is changed with soxr (quality "HQ");
  * samples are clipped to [-1, 1] (float files may exceed full scale, and so may a resampled
    signal by a hair); integer files are already scaled to [-1, 1) by soundfile.
Every failure (missing, empty, unreadable or non-finite file) raises `AudioError`, whose message
names the file (and the dataset key when given) and what to do about it.

Padding or cropping to the model's clip length is `adc_jax.data.waveform.fit_length`.

Truncated and short files. A partial download or copy leaves a file shorter than its header
promises, and libsndfile hides that. Measured with soundfile 0.14.0 / libsndfile 1.2.2 on a 1 s
44.1 kHz mono file cut to half its bytes:
  * WAV (PCM_16, PCM_24, FLOAT): `soundfile.info(path).frames` is the complete frames present
    (22039 for PCM_16), not the 44100 of the header, and `soundfile.read` returns them without a
    word. So `probe_audio` reads the RIFF/RIFX/RF64 `fmt ` and `data` chunk headers itself and
    compares the data size they declare with the frames present (PCM, IEEE float, A-law/u-law;
    for other WAV codecs, such as ADPCM, it cannot tell and reports the file as complete).
  * FLAC: `frames` is 44100 (the STREAMINFO total) and `soundfile.read` fails ("flac decoder lost
    sync"), as does seeking to a frame past the cut (after which the handle stays failed). So
    `probe_audio` seeks to the last frame and reads it (about 0.2 ms); only when that fails does
    it decode the file to count the frames that decode. `load_audio` still fails on such a file
    (as before: libsndfile cannot decode it to the end), naming it.
  * Other formats (OGG, ...): the same last-frame check.
`load_audio` reads a truncated WAV as before: the frames present are real data. A builder calls
`check_clip_lengths` over all its files before decoding: it logs one warning with the truncated
files and the clips shorter than half the dataset's nominal length (both are zero-padded, and
the model masks the padding) and fails only on clips shorter than `min_fraction` of it.

Public API:
  AudioError                                   ValueError whose message names the file and fix.
  load_audio(path, sample_rate, key=)          any file -> [N] float32 mono at sample_rate.
  AudioProbe                                   rate, channels, frames present and promised.
  probe_audio(path, key=)                      header-level probe (no full decode).
  LengthReport                                 what check_clip_lengths found.
  check_clip_lengths(items, dataset=, ...)     probe a dataset's files; warn, or fail on short.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator

import numpy as np
import soundfile as sf
import soxr
from absl import logging

from adc_jax.data.errors import BadData


class AudioError(BadData):
    """An audio file is missing or cannot be used; the message names the file and the fix.

    A `DataError` (`adc_jax.data.errors`): the entry points report it without a traceback.
    """


# What libsndfile (through soundfile) raises for a file it cannot open or decode.
_READ_ERRORS = (sf.SoundFileError, RuntimeError, OSError, ValueError)
# WAV format tags whose frames are data bytes // block_align: PCM, IEEE float, A-law, u-law.
_WAV_LINEAR_TAGS = (0x0001, 0x0003, 0x0006, 0x0007)
_WAV_EXTENSIBLE = 0xFFFE
# A chunk size that means "unknown" (streamed WAV) or "see ds64" (RF64).
_UNKNOWN_SIZE = 0xFFFFFFFF
# Chunks scanned at most before the data chunk (a malformed file must not loop for long).
_MAX_CHUNKS = 64
# Frames per block when a file that fails its last-frame check is decoded to count its frames.
_COUNT_BLOCK = 1024
# Examples per kind named in check_clip_lengths' warning and error.
_EXAMPLES = 5


def _where(path: str, key: str | None) -> str:
    return f"{path!r} (key {key!r})" if key is not None else repr(path)


def _check_file(path: str, where: str) -> None:
    """Raises AudioError unless `path` is an existing, non-empty file."""
    if not os.path.exists(path):
        raise AudioError(
            f"Audio file {where} does not exist; check the path (and the "
            "data.audio_dir setting for datasets)."
        )
    if not os.path.isfile(path):
        raise AudioError(f"Audio path {where} is not a file.")
    if os.path.getsize(path) == 0:
        raise AudioError(
            f"Audio file {where} is empty (0 bytes); replace it with the original recording."
        )


# Bytes read from the start of a file to tell its format by its content.
_SNIFF_BYTES = 4096
# What a file's first bytes say it is: (format, the name ending libsndfile expects or "" when
# libsndfile does not read it, how the content shows it).
_FORMAT_NAMES = {
    ".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3", ".aiff": "AIFF",
    ".caf": "CAF", ".au": "AU", ".w64": "W64",
}  # fmt: skip


def _mpeg_frame_at(head: bytes, i: int) -> bool:
    """An MPEG audio (layer I-III) frame header starts at head[i]."""
    if i + 4 > len(head) or head[i] != 0xFF or head[i + 1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[i + 1] >> 3) & 3, (head[i + 1] >> 1) & 3
    bitrate, rate = head[i + 2] >> 4, (head[i + 2] >> 2) & 3
    return version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3


def sniff_format(path: str) -> tuple[str, str, str]:
    """What the first bytes of a file say it is: (format, name ending, evidence).

    The ending is what libsndfile needs in the name when it cannot tell the format from the
    content alone ("" for a format libsndfile does not read, or when nothing is recognised).
    Formats: WAV, FLAC, OGG, MP3, AIFF, CAF, AU, W64, MP4 (AAC/ALAC in an .m4a/.mp4),
    AAC (ADTS), WebM/Matroska, HTML/text (a failed download), zeros, or "unknown".
    """
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "WAV", ".wav", f"a {head[:4].decode()} WAVE header"
    if head[:4] == b"fLaC":
        return "FLAC", ".flac", "a fLaC header"
    if head[:4] == b"OggS":
        return "OGG", ".ogg", "an OggS page"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF", ".aiff", "a FORM/AIFF header"
    if head[:4] == b"caff":
        return "CAF", ".caf", "a caff header"
    if head[:4] == b".snd":
        return "AU", ".au", "a .snd header"
    if head[:4] == b"riff" and head[4:8] == b"\x2e\x91\xcf\x11":
        return "W64", ".w64", "a Wave64 header"
    if head[:3] == b"ID3":
        if b"fLaC" in head[10:]:
            return "FLAC", ".flac", "an ID3 tag before a fLaC header"
        return "MP3", ".mp3", "an ID3 tag"
    if head[4:8] == b"ftyp":
        return "MP4", "", "an 'ftyp' box: an .m4a/.mp4 container of AAC or ALAC"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "WebM/Matroska", "", "an EBML header"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "AAC", "", "ADTS frame headers"
    frames = [i for i in range(min(len(head), 1024)) if _mpeg_frame_at(head, i)]
    if frames:
        return "MP3", ".mp3", f"MPEG audio frames from byte {frames[0]}"
    if not head.strip(b"\0"):
        return "zeros", "", "only zero bytes"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"{", b"<")) or all(
        32 <= b < 127 or b in (9, 10, 13) for b in head[:256]
    ):
        return "HTML/text", "", "text, not audio"
    return "unknown", "", "no header libsndfile knows"


@contextlib.contextmanager
def _named_by_content(path: str, where: str, error: Exception) -> Iterator[str]:
    """After libsndfile failed on `path`: a name it can read the file under (a link named by
    the content's format, in a temporary folder) when the file's name and content disagree;
    else raises the AudioError that says what the file is."""
    try:
        fmt, ending, evidence = sniff_format(path)
    except OSError:
        raise _unreadable(where, error) from error
    named = os.path.splitext(path)[1].lower()
    if not ending or _FORMAT_NAMES.get(named) == fmt:
        raise _unreadable(where, error, (fmt, ending, evidence)) from error
    folder = tempfile.mkdtemp(prefix=".adc_jax_audio.")
    try:
        link = os.path.join(folder, "audio" + ending)
        os.symlink(os.path.abspath(path), link)
        yield link
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _unreadable(
    where: str, error: Exception, sniffed: tuple[str, str, str] | None = None
) -> AudioError:
    """The AudioError of a file libsndfile cannot read, saying what its content is."""
    cause = str(error).rstrip(". ")
    fmt, ending, evidence = sniffed or ("unknown", "", "")
    if fmt == "HTML/text":
        what = (
            "is text, not audio (a failed download saves the server's error page under the "
            "file's name); download it again"
        )
    elif fmt == "zeros":
        what = (
            "holds only zero bytes (an interrupted download or copy that reserved the space); "
            "copy or download it again"
        )
    elif not ending and fmt != "unknown":
        what = (
            f"holds {fmt} audio ({evidence}), which libsndfile does not read; convert it to "
            "WAV or FLAC (e.g. ffmpeg -i IN -c:a flac OUT.flac)"
        )
    elif ending:
        what = (
            f"looks like {fmt} ({evidence}) but libsndfile cannot decode it ({cause}): the file "
            "is damaged or cut short; download it again or re-encode it"
        )
    else:
        what = (
            f"is in no format libsndfile reads ({cause}): it is damaged, or in another format "
            "than WAV, FLAC, OGG/Vorbis/Opus, MP3 or AIFF; download it again or convert it to "
            "WAV or FLAC"
        )
    return AudioError(f"Cannot read audio file {where}: it {what}.")


def load_audio(path: str, sample_rate: int = 16000, *, key: str | None = None) -> np.ndarray:
    """Reads an audio file as a float32 mono waveform at `sample_rate`.

    Args:
      path: an audio file in any format libsndfile reads (WAV, FLAC, OGG, ...).
      sample_rate: the output sample rate in Hz; the file is resampled with soxr if it differs.
      key: optional dataset key of the example, named in error messages.

    Returns:
      wav: [N] float32 in [-1, 1], N >= 1.

    Raises:
      AudioError: the file is missing, empty (0 samples), unreadable/corrupt, or holds NaN/Inf.
    """
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}.")
    where = _where(path, key)
    _check_file(path, where)
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except _READ_ERRORS as e:
        data, file_rate = _read_by_content(path, where, e)
    if data.shape[0] == 0:
        raise AudioError(
            f"Audio file {where} is empty (0 samples); replace it with the original recording."
        )
    if not np.all(np.isfinite(data)):
        raise AudioError(
            f"Audio file {where} contains NaN or Inf samples; the file is corrupt, replace it."
        )
    wav = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if file_rate != sample_rate:
        wav = soxr.resample(wav, file_rate, sample_rate, quality="HQ")
        if wav.shape[0] == 0:
            raise AudioError(
                f"Audio file {where} is too short to resample from {file_rate} Hz "
                f"to {sample_rate} Hz (no samples left)."
            )
    return np.clip(np.ascontiguousarray(wav, dtype=np.float32), -1.0, 1.0)


def _read_by_content(path: str, where: str, error: Exception) -> tuple[np.ndarray, int]:
    """`sf.read` of a file whose name and content disagree (an MP3 named .wav that libsndfile
    only recognises by its name), read under a name that matches the content; else the
    AudioError that says what the file holds."""
    with _named_by_content(path, where, error) as named:
        try:
            return sf.read(named, dtype="float32", always_2d=True)
        except _READ_ERRORS as e:
            raise _unreadable(where, e, sniff_format(path)) from e


@dataclasses.dataclass(frozen=True)
class AudioProbe:
    """What `probe_audio` learned about one file without decoding it."""

    path: str
    sample_rate: int
    channels: int
    # Frames actually present in the file (what `load_audio` gets, before resampling).
    frames: int
    # Frames the header promises (== frames unless the file is truncated).
    header_frames: int
    # The format the content holds when the name says another (an MP3 named .wav), else "".
    content_format: str = ""

    @property
    def seconds(self) -> float:
        """Duration of the frames present, in seconds."""
        return self.frames / self.sample_rate

    @property
    def header_seconds(self) -> float:
        """Duration the header promises, in seconds."""
        return self.header_frames / self.sample_rate

    @property
    def truncated(self) -> bool:
        """The file holds fewer frames than its header promises (a partial download or copy)."""
        return self.frames < self.header_frames


def _wav_header_frames(path: str) -> int | None:
    """Frames the `data` chunk of a RIFF/RIFX/RF64 WAVE file declares; None when not a WAV of a
    linear codec, or when the header does not say (a streamed WAV's unknown size)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX", b"RF64"):
            return None
        endian = ">" if head[:4] == b"RIFX" else "<"
        block_align = ds64_data_size = None
        position = 12
        for _ in range(_MAX_CHUNKS):
            f.seek(position)
            header = f.read(8)
            if len(header) < 8:
                return None  # no data chunk before the end of the file
            chunk_id, (size,) = header[:4], struct.unpack(endian + "I", header[4:])
            if chunk_id == b"ds64":  # RF64: 64-bit RIFF size, data size, sample count
                body = f.read(16)
                if len(body) == 16:
                    (ds64_data_size,) = struct.unpack("<Q", body[8:16])
            elif chunk_id == b"fmt ":
                body = f.read(min(size, 40))
                if len(body) < 16:
                    return None
                tag, _, _, _, block_align = struct.unpack(endian + "HHIIH", body[:14])
                if (
                    tag == _WAV_EXTENSIBLE and len(body) >= 26
                ):  # the sub-format GUID's first 2 bytes
                    (tag,) = struct.unpack(endian + "H", body[24:26])
                if tag not in _WAV_LINEAR_TAGS or block_align == 0:
                    return None
            elif chunk_id == b"data":
                if block_align is None:
                    return None
                if size == _UNKNOWN_SIZE:
                    if head[:4] != b"RF64" or ds64_data_size is None:
                        return None
                    size = ds64_data_size
                return size // block_align
            position += 8 + size + (size & 1)  # chunks are padded to an even size
    return None


def _frames_that_decode(path: str) -> int:
    """Decodes `path` block by block; the frames before the first decoding error.

    libsndfile drops the block in which decoding fails, so this undercounts by less than
    _COUNT_BLOCK frames plus one codec frame (a FLAC frame: 4096 frames as libsndfile writes).
    """
    frames = 0
    try:
        with sf.SoundFile(path) as f:
            for block in f.blocks(blocksize=_COUNT_BLOCK, dtype="float32", always_2d=True):
                frames += block.shape[0]
    except _READ_ERRORS:
        pass
    return frames


def _last_frame_decodes(f: sf.SoundFile) -> bool:
    """Seeks an open file to its last frame and reads it: False when that fails (truncated)."""
    if not f.seekable():
        return True  # cannot check cheaply; trust the header
    try:
        f.seek(f.frames - 1)
        return f.read(1, dtype="float32").shape[0] == 1
    except _READ_ERRORS:
        return False


def _probe_header(path: str) -> tuple[int, int, int, int, bool]:
    """(sample rate, channels, frames present, frames promised, whether the last frame fails)."""
    with sf.SoundFile(path) as f:
        sample_rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
        header_frames = _wav_header_frames(path)
        cut = False
        if header_frames is None:  # not a linear WAV: trust the count, check the last frame
            header_frames = frames
            cut = frames > 0 and not _last_frame_decodes(f)
    return sample_rate, channels, frames, header_frames, cut


def probe_audio(path: str, *, key: str | None = None) -> AudioProbe:
    """Cheap header-level check of an audio file (no full decode where the format allows).

    WAV: the chunk headers are parsed and compared with the frames present. Other formats: the
    frame count soundfile reports, and the last frame is decoded; only when that fails (a
    truncated FLAC) is the file decoded to count the frames that decode.

    Args:
      path: an audio file in any format libsndfile reads.
      key: optional dataset key of the example, named in error messages.

    Returns:
      The file's AudioProbe; `probe.truncated` when it is shorter than its header promises.

    Raises:
      AudioError: the file is missing, empty (0 bytes or 0 frames) or unreadable, as `load_audio`.
    """
    where = _where(path, key)
    _check_file(path, where)
    content_format = ""
    try:
        sample_rate, channels, frames, header_frames, cut = _probe_header(path)
    except _READ_ERRORS as e:  # e.g. an MP3 named .wav: probed under a name matching its content
        with _named_by_content(path, where, e) as named:
            content_format = sniff_format(path)[0]
            try:
                sample_rate, channels, frames, header_frames, cut = _probe_header(named)
            except _READ_ERRORS as e2:
                raise _unreadable(where, e2, sniff_format(path)) from e2
            if cut:
                frames = _frames_that_decode(named)
    else:
        if cut:  # rare (a damaged file): worth one decode to say how much of it is there
            frames = _frames_that_decode(path)
    if frames == 0:
        promised = f" of the {header_frames} its header promises" if header_frames else ""
        raise AudioError(
            f"Audio file {where} is empty (0 samples{promised}); replace it with the original "
            "recording."
        )
    return AudioProbe(
        path=path,
        sample_rate=sample_rate,
        channels=channels,
        frames=frames,
        header_frames=max(header_frames, frames),
        content_format=content_format,
    )


@dataclasses.dataclass
class LengthReport:
    """What `check_clip_lengths` found in one dataset's files."""

    dataset: str
    nominal_seconds: float
    # How many (where, path) items were checked (a file named by two items counts twice).
    checked: int
    # (where, probe) of every file shorter than its header promises.
    truncated: list[tuple[str, AudioProbe]]
    # (where, probe) of every clip shorter than short_fraction * nominal_seconds.
    short: list[tuple[str, AudioProbe]]


def _example_lines(found: list[tuple[str, AudioProbe]]) -> str:
    """'WHERE: PATH (S s[ of the H s its header promises]); ...' for the first few."""
    lines = []
    for where, probe in found[:_EXAMPLES]:
        promised = (
            f" of the {probe.header_seconds:.2f} s its header promises" if probe.truncated else ""
        )
        lines.append(f"{where}: {probe.path} ({probe.seconds:.2f} s{promised})")
    more = f"; and {len(found) - _EXAMPLES} more" if len(found) > _EXAMPLES else ""
    return "; ".join(lines) + more


def check_clip_lengths(
    items: Iterable[tuple[str, str]],
    *,
    dataset: str,
    nominal_seconds: float,
    min_fraction: float,
    short_fraction: float = 0.5,
    num_threads: int = 8,
) -> LengthReport:
    """Probes every file of a dataset; warns about truncated and short ones, fails on too short.

    Run it after all files are found and before decoding. Every file is probed once
    (`probe_audio`, in threads: it is I/O). One warning is logged with the counts and the first
    few examples of truncated files and of clips shorter than short_fraction * nominal_seconds
    (both are kept: zero-padded to the clip length, and the model masks the padding).
    Truncated files never fail on their own, only when they are also too short.

    Args:
      items: (where, path) pairs; `where` names the file's place in the dataset for messages
        (a CSV row, a key).
      dataset: the dataset's name, for messages.
      nominal_seconds: the dataset's clip length in seconds (10 for AudioDiffCaps).
      min_fraction: in [0, 1]; when > 0, a clip shorter than min_fraction * nominal_seconds
        fails (config key data.min_clip_fraction).
      short_fraction: in [0, 1]; clips shorter than this fraction of nominal_seconds are
        counted as short and warned about.
      num_threads: probing threads.

    Returns:
      The LengthReport.

    Raises:
      AudioError: a file is missing, empty or unreadable (the first, and how many there are), or
        a clip is shorter than min_fraction * nominal_seconds (how many, and the first few).
      ValueError: an argument out of range.
    """
    if not nominal_seconds > 0:
        raise ValueError(f"nominal_seconds={nominal_seconds!r} must be positive.")
    for name, value in (("min_fraction", min_fraction), ("short_fraction", short_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value!r} must be in [0, 1].")
    items = list(items)
    paths = list(dict.fromkeys(path for _, path in items))

    def probe(path: str) -> AudioProbe | AudioError:
        try:
            return probe_audio(path)
        except AudioError as e:
            return e

    with concurrent.futures.ThreadPoolExecutor(max(1, min(num_threads, len(paths)))) as pool:
        probes = dict(zip(paths, pool.map(probe, paths), strict=True))
    failed = [
        (where, probes[path]) for where, path in items if isinstance(probes[path], AudioError)
    ]
    if failed:
        where, error = failed[0]
        count = (
            "1 audio file cannot be used"
            if len(failed) == 1
            else f"{len(failed)} audio files cannot be used; the first"
        )
        raise AudioError(f"{dataset}: {count}, at {where}: {error}")
    found = [(where, probes[path]) for where, path in items]
    renamed = [(w, p) for w, p in found if p.content_format]
    if renamed:
        logging.warning(
            "%s: %d audio file(s) hold another format than their names say, and were read by "
            "their content (%s); rename them to match.",
            dataset,
            len(renamed),
            "; ".join(f"{p.path} holds {p.content_format}" for _, p in renamed[:_EXAMPLES]),
        )
    truncated = [(w, p) for w, p in found if p.truncated]
    short = [(w, p) for w, p in found if p.seconds < short_fraction * nominal_seconds]
    report = LengthReport(dataset, float(nominal_seconds), len(items), truncated, short)
    if truncated or short:
        logging.warning(
            "%s: of %d audio files, %d are truncated (shorter than their header promises: a "
            "partial download or copy?)%s and %d are shorter than %.3g s (%.3g of the nominal "
            "%.3g s clip)%s. Both are zero-padded to the clip length and the model masks the "
            "padding; replace them with the original recordings, or set data.min_clip_fraction "
            "to fail the build on clips shorter than that fraction of %.3g s.",
            dataset,
            len(items),
            len(truncated),
            f" ({_example_lines(truncated)})" if truncated else "",
            len(short),
            short_fraction * nominal_seconds,
            short_fraction,
            nominal_seconds,
            f" ({_example_lines(short)})" if short else "",
            nominal_seconds,
        )
    else:
        logging.info(
            "%s: %d audio files checked: none truncated, none shorter than %.3g s.",
            dataset,
            len(items),
            short_fraction * nominal_seconds,
        )
    if min_fraction > 0:
        too_short = [(w, p) for w, p in found if p.seconds < min_fraction * nominal_seconds]
        if too_short:
            raise AudioError(
                f"{dataset}: {len(too_short)} of {len(items)} audio files are shorter than "
                f"{min_fraction * nominal_seconds:.3g} s (data.min_clip_fraction={min_fraction:g} "
                f"of the nominal {nominal_seconds:g} s clip): "
                f"{_example_lines(too_short)}. Replace them with complete "
                "recordings, or set data.min_clip_fraction=0 to accept them (they are "
                "zero-padded and the model masks the padding)."
            )
    return report
