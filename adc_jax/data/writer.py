"""Writes the splits of the adc_jax tfds builders as `array_record` shards, without TensorFlow.

tfds' own writer (`SplitBuilder`) serialises every example in the main process and shuffles
through a buffer that spills to disk through TensorFlow once a split exceeds 1 GB: the paper-size
synthetic train split (6000 pairs of 10 s) and the AudioDiffCaps dev split (about 4.5k pairs of
10 s) both do. Both builders therefore override `_generate_splits` with `generate_splits` below:

  * examples are made and serialised by `map_in_order` (worker processes for larger splits) and
    written by the main process in the order given: record i of a split is example i, nothing is
    shuffled (the training pipeline shuffles with its own seed);
  * shards roll over at about `SHARD_BYTES`, so their number follows the data, not an estimate,
    and are stored uncompressed (`ARRAY_RECORD_OPTIONS`: reading is 3x cheaper than zstd);
  * everything is written inside the temporary `incomplete.*` folder that tfds'
    `download_and_prepare` creates and renames when every split is written, and the returned
    `SplitInfo`s go into the `dataset_info.json` that tfds writes next, so an interrupted build is
    never read back and `builder.as_data_source(split)` works as with tfds' writer.

Public API:
  serialize_example(example)               encode + serialise one example of the shared schema.
  map_in_order(fn, items, num_workers)     context manager: fn over items, in order, in processes.
  resolve_workers(num_workers, num_items)  how many processes a split is worth.
  write_split(template, records, ...)      records -> shards of one split -> its SplitInfo.
  generate_splits(builder, split_jobs, ...)  the `_generate_splits` of a builder.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import tensorflow_datasets as tfds
from absl import logging
from array_record.python import array_record_module
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core import utils as tfds_utils

from adc_jax.data import features as features_lib

# Target size of one array_record shard in bytes (a shard ends with the record that reaches it).
SHARD_BYTES = 512 * 2**20
# array_record writer options. group_size:1 (one record per chunk, as tfds writes) keeps random
# access cheap. Uncompressed, unlike tfds' default (zstd): waveforms shrink to only about 60%
# (synthetic) and decompressing a 10 s pair costs about 0.8 ms of CPU on every read, which
# halves the training pipeline's throughput on a 2-core host.
ARRAY_RECORD_OPTIONS = "group_size:1,uncompressed"
# Splits with fewer examples than this are written in-process: a process pool costs about a
# second to start (spawn re-imports tfds in every worker).
MIN_ITEMS_FOR_WORKERS = 64

_T = TypeVar("_T")
_R = TypeVar("_R")


@functools.cache
def _codec() -> tuple[Any, Any]:
    """(FeaturesDict, ExampleSerializer) of the shared schema, made once per process."""
    features = features_lib.features_dict()
    return features, example_serializer.ExampleSerializer(features.get_serialized_info())


def serialize_example(example: Mapping[str, Any]) -> bytes:
    """Encodes and serialises one example of `features.features_dict()` into a record.

    Deterministic: protobuf writes the entries of a map (the Example's features) in an order that
    differs between processes unless asked not to, and a build should be the same bytes every time.
    """
    features, serializer = _codec()
    proto = serializer.get_tf_example(features.encode_example(example))
    return proto.SerializeToString(deterministic=True)


def resolve_workers(num_workers: int | None, num_items: int) -> int:
    """Processes to use for `num_items` examples: None = all CPUs; 1 for small splits."""
    if num_workers is None:
        num_workers = os.cpu_count() or 1
    return 1 if num_items < MIN_ITEMS_FOR_WORKERS else max(1, int(num_workers))


@contextlib.contextmanager
def map_in_order(
    fn: Callable[[_T], _R], items: Sequence[_T], num_workers: int, chunksize: int = 4
) -> Iterator[Iterator[_R]]:
    """Yields an iterator over fn(item) for every item, in order.

    With num_workers > 1, `fn` runs in a pool of that many spawned processes (spawn, not fork:
    the caller may already run JAX threads), so `fn` and the items must be picklable and `fn`
    defined at the top level of a module. An exception in `fn` is raised by the iterator; leaving
    the context terminates the pool.
    """
    if num_workers <= 1:
        yield map(fn, items)
        return
    with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
        yield pool.imap(fn, items, chunksize=chunksize)


def write_split(
    template: tfds.core.ShardedFileTemplate,
    records: Iterable[bytes],
    *,
    num_records: int | None = None,
    shard_bytes: int = SHARD_BYTES,
    desc: str = "Writing",
) -> tfds.core.SplitInfo:
    """Writes serialised records, in order, into the array_record shards of one split.

    A shard is closed after the record that brings it to `shard_bytes` or more; shards are written
    under temporary names and renamed to `template`'s names (which hold the shard count) at the
    end.

    Args:
      template: the split's file template (`builder._get_filename_template(split_name=...)`).
      records: serialised examples (`serialize_example`), in the order they are to be stored.
      num_records: the expected count, for the progress bar and a check (None: unknown).
      shard_bytes: target shard size in bytes.
      desc: progress bar label.

    Returns:
      The split's SplitInfo (shard lengths and byte count) for the dataset_info.

    Raises:
      ValueError: no record was given (tfds cannot store an empty split).
      RuntimeError: the number of records differs from num_records.
    """
    if shard_bytes <= 0:
        raise ValueError(f"shard_bytes={shard_bytes} must be positive.")
    template.data_dir.mkdir(parents=True, exist_ok=True)
    stream = iter(
        tfds_utils.tqdm(
            records, total=num_records, unit=" pairs", desc=desc, leave=False, mininterval=1.0
        )
    )
    shard_lengths: list[int] = []
    temp_paths = []
    num_bytes = shard_size = 0
    writer = None
    try:
        for record in stream:
            if writer is None:  # start the next shard
                temp_paths.append(
                    template.data_dir / f".{template.split}-shard{len(temp_paths):05d}.writing"
                )
                writer = array_record_module.ArrayRecordWriter(
                    os.fspath(temp_paths[-1]), ARRAY_RECORD_OPTIONS
                )
                shard_lengths.append(0)
                shard_size = 0
            writer.write(record)
            shard_lengths[-1] += 1
            shard_size += len(record)
            num_bytes += len(record)
            if shard_size >= shard_bytes:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()
    if not shard_lengths:
        raise ValueError(f"No examples for split {template.split!r}: tfds cannot store it.")
    total = sum(shard_lengths)
    if num_records is not None and total != num_records:
        raise RuntimeError(f"Wrote {total} of {num_records} {template.split} examples.")
    for index, path in enumerate(temp_paths):
        path.rename(template.sharded_filepath(shard_index=index, num_shards=len(temp_paths)))
    return tfds.core.SplitInfo(
        name=template.split,
        shard_lengths=shard_lengths,
        num_bytes=num_bytes,
        filename_template=template,
    )


def generate_splits(
    builder: tfds.core.DatasetBuilder,
    split_jobs: Mapping[str, tuple[Callable[[_T], bytes], Sequence[_T]]],
    *,
    num_workers: int | None = None,
    shard_bytes: int | None = None,
) -> list[tfds.core.SplitInfo]:
    """Writes every split of `builder`; use as the body of its `_generate_splits`.

    Args:
      builder: the builder being prepared (gives the file templates of its temporary folder).
      split_jobs: split name -> (fn, items): record i of the split is fn(items[i]), a serialised
        example (`serialize_example`); fn must be picklable when worker processes are used.
      num_workers: processes per split (None: all CPUs; `resolve_workers` decides).
      shard_bytes: target shard size (None: SHARD_BYTES).

    Returns:
      One SplitInfo per split, in the order of `split_jobs`.
    """
    infos = []
    for split, (fn, items) in split_jobs.items():
        workers = resolve_workers(num_workers, len(items))
        start = time.perf_counter()
        with map_in_order(fn, items, workers) as records:
            info = write_split(
                builder._get_filename_template(split_name=split),
                records,
                num_records=len(items),
                shard_bytes=shard_bytes or SHARD_BYTES,
                desc=f"Generating {builder.name} {split}",
            )
        elapsed = time.perf_counter() - start
        logging.info(
            "%s/%s: wrote %d %s examples (%.1f MiB, %d shards) in %.1f s "
            "(%.1f examples/s, %d processes).",
            builder.name,
            builder.builder_config.name if builder.builder_config else "",
            len(items),
            split,
            info.num_bytes / 2**20,
            len(info.shard_lengths),
            elapsed,
            len(items) / max(elapsed, 1e-9),
            workers,
        )
        infos.append(info)
    return infos
