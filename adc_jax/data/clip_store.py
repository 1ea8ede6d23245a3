"""Each distinct clip stored once: pairs that name their clips instead of holding them.

ADIFF's pairs recur over the same recordings (ACD: ~48k training pairs over AudioCaps clips that
appear in many pairs; CLD: 5,225 eval pairs over 1,045 Clotho clips). A builder whose clips
recur stores, for each pair split `S`, two tfds splits in the same dataset folder:

  S          the pairs, with the shared schema except that `audio1`/`audio2` are replaced by
             `clip1`/`clip2`: int64 positions of the pair's clips in `S_clips`
             (`referenced_features_dict`);
  S_clips    every distinct clip of S once, record i = clip i as raw little-endian int16 bytes
             (no proto: reading one is a `np.frombuffer`).

Disk then grows with the distinct clips, not with the pairs. `pair_source(builder, split)` joins
them on read: it is a random-access Sequence whose item i is the decoded pair record with
`audio1`/`audio2` (read-only int16 views of the clip records) added, so the grain pipeline,
evaluation and the tools read a referencing dataset exactly as one that stores the audio inline
(global shuffling, the iterator's saved state and per-process sharding index pairs as before).
Datasets whose every clip is its own mixture (synthetic_adc, clip_pairs, AudioDiffCaps' mixtures)
store the audio inline: referencing would save nothing. `pair_source` returns their split as is.

Public API:
  CLIPS_SUFFIX, clips_split(split), pair_splits(builder)
  clip_record(wav) -> bytes; read_clip(record) -> [N] int16
  referenced_features_dict()       the pair schema of a referencing dataset.
  has_clip_store(builder, split)
  JoinedPairs                      a pair split joined with its clips (Sequence of dicts).
  pair_source(builder, split)      the split's records with their audio, whichever the storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tensorflow_datasets.proto import tf_example_pb2

# The tfds split holding split S's distinct clips is S + CLIPS_SUFFIX.
CLIPS_SUFFIX = "_clips"
# Stored sample format of a clip record: little-endian int16, whatever the host's order.
_SAMPLE = np.dtype("<i2")


def clips_split(split: str) -> str:
    """The name of the split holding `split`'s clips ("train" -> "train_clips")."""
    return split + CLIPS_SUFFIX


def pair_splits(builder: Any) -> list[str]:
    """The splits of a prepared builder that hold pairs (its clip stores left out)."""
    return [s for s in builder.info.splits if not s.endswith(CLIPS_SUFFIX)]


def clip_record(wav: np.ndarray) -> bytes:
    """One stored clip: [N] int16 samples -> their little-endian bytes."""
    return np.ascontiguousarray(wav, _SAMPLE).tobytes()


def read_clip(record: bytes) -> np.ndarray:
    """A clip record -> [N] int16, a read-only view of the record's bytes."""
    return np.frombuffer(record, _SAMPLE)


def referenced_features_dict():
    """The tfds FeaturesDict of a pair that names its clips: the shared pair schema
    (`features.features_dict`) with audio1/audio2 replaced by clip1/clip2, int64 scalars: the
    positions of its clips in the split's clip store."""
    import tensorflow_datasets as tfds

    from adc_jax.data import features as features_lib

    fields = dict(features_lib.features_dict())
    del fields["audio1"], fields["audio2"]
    clip = tfds.features.Tensor(shape=(), dtype=np.int64)
    return tfds.features.FeaturesDict(
        {"key": fields.pop("key"), "clip1": clip, "clip2": clip, **fields}
    )


def has_clip_store(builder: Any, split: str) -> bool:
    """Whether `split` of the prepared builder names its clips in a clip store."""
    return clips_split(split) in builder.info.splits


def _checked_index(i: int, n: int) -> int:
    """`i` as a position in [0, n) (negative counts from the end); IndexError outside, so that
    iterating a Sequence stops at its end."""
    i = int(i)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"index {i} out of range for {n} pairs")
    return i


class JoinedPairs(Sequence):
    """A pair split joined with its clip store: item i = the pair's decoded record (tfds'
    decoding: key, captions, caption_tiers, scene, recipe, edits, clip1, clip2) with audio1
    and audio2, [N] int16 read-only views of the clip records, added.

    `train_records()` is the same Sequence for training, which needs only key, audio1, audio2,
    captions and caption_tiers: they are parsed from the serialised pair directly, cheaper than
    tfds' generic decoding of every field. Picklable (grain's worker processes).

    Args:
      pairs: the pair split (`builder.as_data_source(split)`).
      clips: the clip store's serialised records (`builder.as_data_source(S_clips).data_source`,
        or any Sequence of clip records).
    """

    def __init__(self, pairs: Sequence[Any], clips: Sequence[bytes]):
        self.pairs, self.clips = pairs, clips

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = _checked_index(i, len(self))
        record = dict(self.pairs[i])
        record["audio1"] = read_clip(self.clips[int(record["clip1"])])
        record["audio2"] = read_clip(self.clips[int(record["clip2"])])
        return record

    def train_records(self) -> _TrainRecords | None:
        """The split as training reads it (see the class docstring), or None when the pairs'
        serialised records cannot be reached (then index this Sequence itself)."""
        raw = getattr(self.pairs, "data_source", None)
        return None if raw is None else _TrainRecords(raw, self.clips)


class _TrainRecords(Sequence):
    """Item i: key, audio1, audio2, captions, caption_tiers of pair i, as
    `pipeline.parse_train_fields` gives them for a pair that holds its audio."""

    def __init__(self, raw_pairs: Sequence[bytes], clips: Sequence[bytes]):
        self.raw_pairs, self.clips = raw_pairs, clips

    def __len__(self) -> int:
        return len(self.raw_pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = _checked_index(i, len(self))
        feature = tf_example_pb2.Example.FromString(self.raw_pairs[i]).features.feature
        return {
            "key": feature["key"].bytes_list.value[0],
            "audio1": read_clip(self.clips[feature["clip1"].int64_list.value[0]]),
            "audio2": read_clip(self.clips[feature["clip2"].int64_list.value[0]]),
            "captions": list(feature["captions"].bytes_list.value),
            "caption_tiers": np.asarray(feature["caption_tiers"].int64_list.value, np.int32),
        }


def pair_source(builder: Any, split: str) -> Sequence[dict[str, Any]]:
    """The records of a prepared builder's pair split, each with audio1 and audio2, whether the
    dataset stores the audio in the pairs or in a clip store (`JoinedPairs`)."""
    pairs = builder.as_data_source(split)
    if not has_clip_store(builder, split):
        return pairs
    return JoinedPairs(pairs, builder.as_data_source(clips_split(split)).data_source)
