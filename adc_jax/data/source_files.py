"""The source files a build read, so that a changed file is never served from an old build.

Every dataset built from the user's files (audio_diff_caps, adiff, clip_pairs and pretraining's
audio_folder) names its build by a fingerprint of its settings and of every source file it
reads: the file's path relative to its folder (moving the folder does not rebuild), its size and
its modification time, taken with one `stat` per file (no file is read). Replacing a truncated
or corrupt file, as the build's warnings advise, therefore gives the build another name, and the
next run builds again from the current files instead of serving the old audio.

Each build also stores `sources.json` in its folder (next to tfds' dataset_info.json): what the
settings were and every file's size and modification time. When a build starts and an older
build of the same settings and folders exists, the log names the files that changed (the first
few, and how many) and the folder to delete to free the old build's space; the old build is
never deleted by adc_jax.

Public API:
  SourceFile(name, size, mtime_ns)           one file: its name in the build, size, mtime.
  stat_files(root, paths, prefix="")         SourceFiles of paths relative to root.
  digest(files)                              a hex digest of the files, for a fingerprint.
  Sources(settings, files)                   what a build read: settings key + files.
  before_build(dataset_dir, build_dir, sources)   logs what changed since older builds.
  after_build(build_dir, sources)            writes build_dir/sources.json.
  changed_files(old, new) -> list[str]       "a.wav (size 10 -> 20 bytes)", ... (for messages).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Sequence

from absl import logging

# The manifest of a build's source files, in the build's folder.
MANIFEST = "sources.json"
# Changed files named in the log when a build supersedes another.
_EXAMPLES = 5


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """One file a build reads: its name in the build (a path relative to its folder, with a
    prefix saying which folder), its size in bytes and its modification time in ns."""

    name: str
    size: int
    mtime_ns: int


def stat_files(root: str, paths: Iterable[str], prefix: str = "") -> tuple[SourceFile, ...]:
    """SourceFiles of `paths` (relative to `root`, or absolute under it), named prefix + the
    relative path with "/" separators.

    Raises:
      FileNotFoundError: a file does not exist (callers check existence first, with messages
        that name the row naming it).
    """
    out = []
    for path in paths:
        full = path if os.path.isabs(path) else os.path.join(root, path)
        stat = os.stat(full)
        rel = os.path.relpath(full, root).replace(os.sep, "/")
        out.append(SourceFile(prefix + rel, int(stat.st_size), int(stat.st_mtime_ns)))
    return tuple(out)


def digest(files: Iterable[SourceFile]) -> str:
    """A hex digest of every file's name, size and modification time, in the order given."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\t{f.size}\t{f.mtime_ns}\n".encode())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class Sources:
    """What a build read. settings: a JSON-able dict of everything else that names the build
    (dataset settings, absolute source folders), so builds that differ only in their files can
    be found; files: every source file."""

    settings: dict
    files: tuple[SourceFile, ...] = dataclasses.field(repr=False)

    @property
    def settings_key(self) -> str:
        return json.dumps(self.settings, sort_keys=True)


def _read_manifest(path: str) -> tuple[str, dict[str, tuple[int, int]]] | None:
    try:
        with open(path) as f:
            data = json.load(f)
        return data["settings"], {name: (int(s), int(m)) for name, s, m in data["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def changed_files(old: dict[str, tuple[int, int]], new: Sequence[SourceFile]) -> list[str]:
    """The differences between a build's files and the current ones, one phrase per file."""
    out, current = [], {f.name: f for f in new}
    for f in new:
        if f.name not in old:
            out.append(f"{f.name} (new)")
        elif old[f.name][0] != f.size:
            out.append(f"{f.name} (size {old[f.name][0]} -> {f.size} bytes)")
        elif old[f.name][1] != f.mtime_ns:
            out.append(f"{f.name} (modified)")
    out += [f"{name} (gone)" for name in old if name not in current]
    return out


def _folder_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(path)
        for name in names
    )


def before_build(dataset_dir: str, build_dir: str, sources: Sources) -> None:
    """Logs, for every older build under `dataset_dir` (DATA_DIR/<dataset>) with the same
    settings whose files differ, which files changed and which folder to delete.

    build_dir: the folder being built (DATA_DIR/<dataset>/<config>/<version>).
    """
    if not os.path.isdir(dataset_dir):
        return
    key = sources.settings_key
    new_config = os.path.dirname(os.path.abspath(build_dir))
    for entry in sorted(os.scandir(dataset_dir), key=lambda e: e.name):
        if not entry.is_dir() or os.path.abspath(entry.path) == new_config:
            continue
        for version in sorted(os.scandir(entry.path), key=lambda e: e.name):
            manifest = _read_manifest(os.path.join(version.path, MANIFEST))
            if manifest is None or json.dumps(manifest[0], sort_keys=True) != key:
                continue
            changes = changed_files(manifest[1], sources.files)
            if not changes:
                continue
            shown = "; ".join(changes[:_EXAMPLES])
            more = f"; and {len(changes) - _EXAMPLES} more" if len(changes) > _EXAMPLES else ""
            logging.warning(
                "%d source file(s) changed since the build in %s (%s%s): building anew from the "
                "current files. That build is kept; delete %s to free its %.1f MiB.",
                len(changes),
                version.path,
                shown,
                more,
                entry.path,
                _folder_bytes(entry.path) / 2**20,
            )


def after_build(build_dir: str, sources: Sources) -> None:
    """Writes `build_dir/sources.json` (settings and every file's size and mtime), unless there."""
    path = os.path.join(build_dir, MANIFEST)
    if os.path.exists(path) or not os.path.isdir(build_dir):
        return
    data = {
        "settings": sources.settings,
        "files": [[f.name, f.size, f.mtime_ns] for f in sources.files],
    }
    temp = path + ".writing"
    with open(temp, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(temp, path)
