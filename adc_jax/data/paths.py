"""Remote paths (gs://, s3://, ...): telling them apart, and refusing them where adc_jax needs a
local file.

Which settings take a remote path, and the library that reaches it (docs/data.md#remote-paths):
  * data.data_dir: reading a dataset already built there. tfds finds and reads its metadata
    through etils.epath (which, without TensorFlow, uses fsspec: `pip install gcsfs` for gs://,
    s3fs for s3://) and grain reads its records through array_record's reader. Building into
    a remote data_dir is refused: a build takes a file lock and writes temporary files from
    worker processes, which need a local disk.
  * --workdir, data.clips_dir / background_dir / csv_dir / audio_dir: refused, naming the
    setting (the run directory's log, metrics and config files and the recordings are read and
    written with local file APIs: Python's `open`, libsndfile, `os.stat`).
A local path (or a bucket mounted as a local folder, e.g. with gcsfuse) works everywhere.

Before this check a `gs://` workdir became a local folder named `gs:` in the current
directory (`os.path.abspath`), silently.

Public API:
  is_remote(path) -> bool
  RemotePathError                          BadData: exit status 2, the message names the setting.
  require_local(path, setting, why)        raises RemotePathError for a remote path.
"""

from __future__ import annotations

import os
import re

from adc_jax.data.errors import BadData

# A URI scheme: "gs://bucket/...", "s3://...", "az://...", "hf://...", "memory://...".
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# What to do instead, said by every refusal.
LOCAL_HINT = (
    "Give a local directory, or mount the bucket as one (e.g. with gcsfuse) and give that "
    "path; docs/data.md#remote-paths lists the settings that take a remote path."
)


# Why a dataset's source folders must be local (data.clips_dir, csv_dir, audio_dir, ...).
SOURCE_WHY = (
    "source recordings and metadata are read with local file APIs (libsndfile decodes them, "
    "and their sizes and modification times, from os.stat, name the build)"
)
# Why --workdir must be local.
WORKDIR_WHY = (
    "the run directory is written with local file APIs (config.json, train.log, "
    "metrics.jsonl, TensorBoard events and evaluation files; only the checkpoints go through "
    "Orbax, which could write to a bucket)"
)


class RemotePathError(BadData):
    """A remote path given to a setting that needs a local one."""


def is_remote(path: str | os.PathLike | None) -> bool:
    """Whether `path` is a URI with a scheme (gs://, s3://, ...) rather than a local path."""
    return bool(path) and _SCHEME.match(os.fspath(path)) is not None


def require_local(path: str | os.PathLike | None, setting: str, why: str) -> None:
    """Raises RemotePathError, naming `setting` and `why`, if `path` is remote.

    Args:
      path: the setting's value.
      setting: how the user gave it ("--workdir", "data.clips_dir").
      why: what needs the local file, e.g. "recordings are decoded with libsndfile".
    """
    if is_remote(path):
        raise RemotePathError(
            f"{setting}={os.fspath(path)!r} is a remote path, but {why}, which needs a local "
            f"path. {LOCAL_HINT}"
        )
