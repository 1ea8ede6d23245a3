"""The caption file of a built split: every pair's text fields, in record order, beside its records.

A run's start-up needs the keys and captions of whole splits (the vocabulary, the training
entries, the evaluation references) but none of their audio. Read from the records, they cost a
pass over the split's audio bytes where the pairs hold their audio (synthetic_adc, clip_pairs),
and tfds' decoding of every pair record where they name clips (`clip_store`). So the shared
writer (`writer.generate_splits`) also writes, for every pair split (a clip store, `S_clips`,
gets none), the file `captions-<split>.json.gz` into the dataset's folder: a gzipped JSON list
holding, for record i, the dict of its `FIELDS` (what `vocab.read_captions` and
`eval_split.load_eval_split` read). It is written inside tfds' temporary build folder, so it
exists exactly when the build does. Builds made before this file existed have none;
`vocab.split_captions` then reads the records.

At ADIFF's size (48k pairs, three tiers, tier 3 answers of up to 200 words) the file is about
17 MB and loads in 0.6 s (docs/data.md#start-up).

Public API:
  FIELDS                     the text fields of a record that the file keeps.
  file_path(data_dir, split) -> epath.Path (data_dir may be remote: gs://...).
  write(data_dir, split, records)
  read(data_dir, split)      -> list of dicts, or None when the build has no caption file.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from typing import Any

from etils import epath

# The text fields of a pair record kept in the file, in this order.
FIELDS = ("key", "captions", "caption_tiers", "scene", "edit_ops", "edit_classes")


def file_path(data_dir: str | epath.PathLike, split: str) -> epath.Path:
    """The caption file of `split` in a dataset's folder (`builder.data_dir`)."""
    return epath.Path(data_dir) / f"captions-{split}.json.gz"


def write(data_dir: str | epath.PathLike, split: str, records: Sequence[dict[str, Any]]) -> None:
    """Writes the text fields of `records` (dicts of str, lists of str and lists of int).

    The bytes depend on the records alone (gzip's timestamp is 0), as the shards' do.
    """
    text = json.dumps(
        [{f: r[f] for f in FIELDS} for r in records], ensure_ascii=False, separators=(",", ":")
    )
    file_path(data_dir, split).write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))


def read(data_dir: str | epath.PathLike, split: str) -> list[dict[str, Any]] | None:
    """The records' text fields (one dict per record, in record order), or None without a file."""
    path = file_path(data_dir, split)
    if not path.exists():
        return None
    return json.loads(gzip.decompress(path.read_bytes()))
