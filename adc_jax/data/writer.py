"""Writes the splits of the adc_jax tfds builders as `array_record` shards, without TensorFlow.

tfds' own writer (`SplitBuilder`) serialises every example in the main process and shuffles
through a buffer that spills to disk through TensorFlow once a split exceeds 1 GB: the paper-size
synthetic train split (6000 pairs of 10 s) and the AudioDiffCaps dev split (about 4.5k pairs of
10 s) both do. Every builder therefore writes its splits with the functions below (the builder
base, `adc_jax.data.builder.Builder`, replaces tfds' `_generate_splits` by `generate_splits`):

  * examples are made and serialised by `map_in_order` (worker processes for larger splits) and
    written by the main process in the order given: record i of a split is example i, nothing is
    shuffled (the training pipeline shuffles with its own seed);
  * shards roll over at about `SHARD_BYTES`, so their number follows the data, not an estimate,
    and are stored uncompressed (`ARRAY_RECORD_OPTIONS`: reading is 3x cheaper than zstd);
  * everything is written inside the temporary `incomplete.*` folder that tfds'
    `download_and_prepare` creates and renames when every split is written, and the returned
    `SplitInfo`s go into the `dataset_info.json` that tfds writes next, so an interrupted build is
    never read back and `builder.as_data_source(split)` works as with tfds' writer;
  * for a pair schema (one with `captions`), each split's text fields go into its caption file
    (`caption_file`), parsed back from the records as they are written (`text_fields`), so
    start-up reads captions and keys without reading audio.

Public API:
  serialize_example(example, schema)       encode + serialise one example (shared schema default).
  map_in_order(fn, items, num_workers)     context manager: fn over items, in order, in processes;
                                           a worker that dies raises BuildWorkerDied (no hang).
  BuildWorkerDied                          RuntimeError naming the item a dead worker was making.
  resolve_workers(num_workers, num_items)  how many processes a split is worth.
  write_split(template, records, ...)      records -> shards of one split -> its SplitInfo.
  text_fields(record)                      the caption file's fields of a serialised pair record.
  generate_splits(builder, split_jobs, ...)  every split of a builder (`builder.Builder`).
  prepare_once(cls, config, data_dir)      the builder, built (once, under a file lock) if missing.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import functools
import json
import multiprocessing
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import tensorflow_datasets as tfds
from absl import logging
from array_record.python import array_record_module
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core import utils as tfds_utils
from tensorflow_datasets.proto import tf_example_pb2

from adc_jax.data import caption_file, clip_store, errors, paths, source_files
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
def _codec(schema: Callable[[], Any]) -> tuple[Any, Any]:
    """(FeaturesDict, ExampleSerializer) of a schema, made once per process."""
    features = schema()
    return features, example_serializer.ExampleSerializer(features.get_serialized_info())


def serialize_example(
    example: Mapping[str, Any], schema: Callable[[], Any] = features_lib.features_dict
) -> bytes:
    """Encodes and serialises one example of `schema()` (the shared pair schema,
    `features.features_dict()`, unless given) into a record.

    Deterministic: protobuf writes the entries of a map (the Example's features) in an order that
    differs between processes unless asked not to, and a build should be the same bytes every time.
    """
    features, serializer = _codec(schema)
    proto = serializer.get_tf_example(features.encode_example(example))
    return proto.SerializeToString(deterministic=True)


def resolve_workers(num_workers: int | None, num_items: int) -> int:
    """Processes to use for `num_items` examples: None = all CPUs; 1 for small splits."""
    if num_workers is None:
        num_workers = os.cpu_count() or 1
    return 1 if num_items < MIN_ITEMS_FOR_WORKERS else max(1, int(num_workers))


class BuildWorkerDied(RuntimeError):
    """A worker process of `map_in_order` died (crash, OOM kill): the build cannot finish."""


# Chunks of items in flight per worker process (submitted and not yet consumed): enough to keep
# every worker busy while the consumer writes, few enough that finished results waiting for an
# earlier, slower chunk stay a bounded amount of memory.
CHUNKS_IN_FLIGHT_PER_WORKER = 3
# Longest item repr quoted in a BuildWorkerDied message.
_MAX_ITEM_REPR = 300

# Set in each worker process by `_init_worker`: the mapped function, the shared table in which
# every worker writes (its pid, the index of the item it is making or -1), and its slot in it.
_worker_fn: Callable[[Any], Any] | None = None
_worker_table: Any = None
_worker_slot = -1


def _init_worker(fn: Callable[[Any], Any], table: Any, slots: Any) -> None:
    """ProcessPoolExecutor initializer: claims a slot of the table and remembers `fn`."""
    global _worker_fn, _worker_table, _worker_slot
    with slots.get_lock():
        _worker_slot = slots.value
        slots.value += 1
    _worker_fn, _worker_table = fn, table
    if 2 * _worker_slot + 1 < len(table):
        table[2 * _worker_slot] = os.getpid()
        table[2 * _worker_slot + 1] = -1


def _run_chunk(start: int, chunk: Sequence[Any]) -> list[Any]:
    """Runs `_worker_fn` over the items start, start+1, ... of one chunk, in a worker process."""
    assert _worker_fn is not None, "_init_worker did not run in this process"
    tracked = 2 * _worker_slot + 1 < len(_worker_table)
    results = []
    for offset, item in enumerate(chunk):
        if tracked:
            _worker_table[2 * _worker_slot + 1] = start + offset
        results.append(_worker_fn(item))
    if tracked:
        _worker_table[2 * _worker_slot + 1] = -1
    return results


def _worker_processes(executor: concurrent.futures.ProcessPoolExecutor) -> list[Any]:
    """The executor's worker processes (multiprocessing.Process), for exit codes and terminating.

    ProcessPoolExecutor has no public accessor before Python 3.14 (`terminate_workers`), so this
    reads its `_processes` dict; when that ever disappears, messages lose the exit code and an
    early exit waits for the chunks already running instead of terminating them.
    """
    processes = getattr(executor, "_processes", None)
    return list(processes.values()) if isinstance(processes, dict) else []


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "an unknown signal"
        return f"killed by signal {-exitcode} ({name})"
    return f"exit code {exitcode}"


def _short_repr(item: Any) -> str:
    text = repr(item)
    return text if len(text) <= _MAX_ITEM_REPR else text[: _MAX_ITEM_REPR - 3] + "..."


def _wait_for_breakdown(executor: concurrent.futures.ProcessPoolExecutor) -> list[Any]:
    """Waits until a broken executor has stopped all its workers; returns them (exit codes set).

    Once a worker has died, the executor's manager thread terminates (SIGTERM) the others and
    joins them all. Joining them here at the same time would race it for each exit status (the
    loser of two waitpid calls sees none), so this waits for that thread instead (private, as in
    `_worker_processes`; without it, the processes are joined here).
    """
    processes = _worker_processes(executor)
    manager = getattr(executor, "_executor_manager_thread", None)
    if isinstance(manager, threading.Thread):
        manager.join(timeout=30.0)
    else:
        for p in processes:
            p.join(timeout=10.0)
    return processes


def _worker_died_error(
    processes: list[Any],
    table: Any,
    items: Sequence[Any],
    chunk_start: int,
    chunksize: int,
    num_workers: int,
) -> BuildWorkerDied:
    """The error that names the item(s) a dead worker was making, its exit status and the fix."""
    # `processes` have all ended (`_wait_for_breakdown`): the survivors by the executor's SIGTERM,
    # so the culprits are the processes that ended any other way.
    making = {int(table[i]): int(table[i + 1]) for i in range(0, len(table), 2) if table[i] > 0}
    dead = [p for p in processes if p.exitcode is not None and p.exitcode != -signal.SIGTERM]
    if not dead:  # a culprit killed by SIGTERM itself cannot be told apart from the others
        dead = [p for p in processes if p.exitcode not in (None, 0)]
    culprits = []
    for p in dead:
        index = making.get(p.pid)
        if index is None:
            what = "before it took any item (it failed to start: see its traceback above)"
        elif 0 <= index < len(items):
            what = f"while making item {index} of {len(items)}: {_short_repr(items[index])}"
        else:
            what = "between two items"
        culprits.append(f"worker process {p.pid} ({_describe_exit(p.exitcode)}) {what}")
    if not culprits:
        end = min(chunk_start + chunksize, len(items))
        culprits.append(
            f"a worker process (exit status unknown) while making one of items {chunk_start} to "
            f"{end - 1} of {len(items)}, the first being {_short_repr(items[chunk_start])}"
        )
    return BuildWorkerDied(
        "A build worker process died: "
        + "; ".join(culprits)
        + ". Its work is lost, so the build stops here instead of waiting for it forever. Likely "
        "causes: the machine ran out of memory (the kernel's OOM killer sends SIGKILL; `dmesg` "
        "shows it) or an audio decoder crashed on a damaged file. Rerun the build; if it dies "
        f"again, give the builder fewer worker processes (num_workers, {num_workers} here) to "
        "use less memory, and decode the file named above on its own (e.g. "
        "adc_jax.data.audio_io.load_audio(path)) to see whether it crashes."
    )


def _ordered_results(
    executor: concurrent.futures.ProcessPoolExecutor,
    items: Sequence[_T],
    chunksize: int,
    num_workers: int,
    table: Any,
    finished: list[bool],
) -> Iterator[_R]:
    """fn(item) in order, submitting chunks as results are consumed (a bounded window)."""
    window = CHUNKS_IN_FLIGHT_PER_WORKER * num_workers
    in_flight: collections.deque[tuple[int, concurrent.futures.Future]] = collections.deque()
    next_start = 0
    while next_start < len(items) or in_flight:
        start = in_flight[0][0] if in_flight else next_start
        try:
            while next_start < len(items) and len(in_flight) < window:
                chunk = items[next_start : next_start + chunksize]
                in_flight.append((next_start, executor.submit(_run_chunk, next_start, chunk)))
                next_start += chunksize
            start, future = in_flight.popleft()
            results = future.result()
        except BrokenProcessPool as e:  # from result(), or from submit() once it is known
            raise _worker_died_error(
                _wait_for_breakdown(executor), table, items, start, chunksize, num_workers
            ) from e
        yield from results
    finished[0] = True  # every result was consumed


@contextlib.contextmanager
def map_in_order(
    fn: Callable[[_T], _R], items: Sequence[_T], num_workers: int, chunksize: int = 4
) -> Iterator[Iterator[_R]]:
    """Yields an iterator over fn(item) for every item, in order.

    With num_workers > 1, `fn` runs in a `concurrent.futures.ProcessPoolExecutor` of that many
    spawned processes (spawn, not fork: the caller may already run JAX threads), so `fn` and the
    items must be picklable and `fn` defined at the top level of a module. Items go to the
    workers in chunks of `chunksize`, and at most CHUNKS_IN_FLIGHT_PER_WORKER chunks per worker
    are submitted and not yet consumed, so memory stays bounded however many items there are.

    An exception raised by `fn` is raised by the iterator with its own type and message. A
    worker process that dies (a crash in native code, an out-of-memory kill, os._exit) raises
    `BuildWorkerDied`, naming the item it was making and its exit status, instead of waiting
    forever for the lost work. Leaving the context before the end (a break, an exception,
    KeyboardInterrupt) cancels the queued chunks and terminates the workers without waiting.
    """
    if chunksize < 1:
        raise ValueError(f"chunksize={chunksize} must be at least 1.")
    if num_workers <= 1:
        yield map(fn, items)
        return
    context = multiprocessing.get_context("spawn")
    # (pid, index of the item being made or -1) per worker: names the item a dead worker held.
    table = context.RawArray("q", 2 * num_workers)
    slots = context.Value("i", 0)
    executor = concurrent.futures.ProcessPoolExecutor(
        num_workers, mp_context=context, initializer=_init_worker, initargs=(fn, table, slots)
    )
    finished = [False]
    try:
        yield _ordered_results(executor, items, chunksize, num_workers, table, finished)
    finally:
        if finished[0]:
            executor.shutdown(wait=True)
        else:
            processes = _worker_processes(executor)
            executor.shutdown(wait=False, cancel_futures=True)
            for p in processes:  # the chunks they run are not wanted any more
                if p.is_alive():
                    p.terminate()
            for p in processes:
                p.join(timeout=10.0)


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
            records, total=num_records, unit=" records", desc=desc, leave=False, mininterval=1.0
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


def text_fields(record: bytes) -> dict[str, Any]:
    """The caption file's fields (`caption_file.FIELDS`) of one serialised pair record: key and
    scene as str, captions, edit_ops and edit_classes as lists of str, caption_tiers as a list of
    int (empty when untiered)."""
    # tfds ships the tf.train.Example message class; no TensorFlow needed. Parsing copies the
    # waveforms once more, which costs far less than making them did.
    feature = tf_example_pb2.Example.FromString(record).features.feature

    def texts(name: str) -> list[str]:
        return [v.decode("utf-8") for v in feature[name].bytes_list.value]

    return {
        "key": texts("key")[0],
        "captions": texts("captions"),
        "caption_tiers": list(feature["caption_tiers"].int64_list.value),
        "scene": texts("scene")[0],
        "edit_ops": texts("edit_ops"),
        "edit_classes": texts("edit_classes"),
    }


def _keeping_text(records: Iterable[bytes], texts: list[dict[str, Any]]) -> Iterator[bytes]:
    """Yields `records`, appending the `text_fields` of each to `texts` on the way."""
    for record in records:
        texts.append(text_fields(record))
        yield record


def generate_splits(
    builder: tfds.core.DatasetBuilder,
    split_jobs: Mapping[str, tuple[Callable[[_T], bytes], Sequence[_T]]],
    *,
    num_workers: int | None = None,
    shard_bytes: int | None = None,
) -> list[tfds.core.SplitInfo]:
    """Writes every split of `builder`, and its caption file for a pair schema (one with
    `captions`); use as the body of its `_generate_splits`.

    Args:
      builder: the builder being prepared (gives the file templates of its temporary folder).
      split_jobs: split name -> (fn, items): record i of the split is fn(items[i]), a serialised
        example (`serialize_example`); fn must be picklable when worker processes are used.
      num_workers: processes per split (None: all CPUs; `resolve_workers` decides).
      shard_bytes: target shard size (None: SHARD_BYTES).

    Returns:
      One SplitInfo per split, in the order of `split_jobs`.
    """
    begin_splits(builder, split_jobs, num_workers=num_workers)
    has_captions = "captions" in builder.info.features
    infos = []
    for split, (fn, items) in split_jobs.items():
        workers = resolve_workers(num_workers, len(items))
        template = builder._get_filename_template(split_name=split)
        # A clip store's records are raw samples (`clip_store`), not pairs.
        keep_text = has_captions and not split.endswith(clip_store.CLIPS_SUFFIX)
        texts: list[dict[str, Any]] = []
        start = time.perf_counter()
        with split_records(builder, split, fn, items, workers) as records:
            info = write_split(
                template,
                _keeping_text(records, texts) if keep_text else records,
                num_records=len(items),
                shard_bytes=shard_bytes or SHARD_BYTES,
                desc=f"Generating {builder.name} {split}",
            )
        if keep_text:
            caption_file.write(template.data_dir, split, texts)
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


# --------------------------------------------------------------------------- sharded builds


@dataclasses.dataclass(frozen=True)
class ShardedBuild:
    """A build split into `count` independent shards: while `sharded_build(spec)` is active,
    `generate_splits` writes shard `index` (records index*n//count .. (index+1)*n//count - 1 of
    every split of n records) and raises `ShardWritten`, or, with index None, combines the
    shards' records into the dataset (equal, record for record, to a build in one piece).

    folder: where the shards are (`<folder>/shard-<i>-of-<count>/`); "" = next to the dataset,
      `<data_dir>/<name>/<config>/<version>.shards/`.
    """

    count: int
    index: int | None = None
    folder: str = ""

    def __post_init__(self):
        if not (isinstance(self.count, int) and self.count >= 1):
            raise ValueError(f"num_shards={self.count!r} must be a positive integer.")
        if self.index is not None and not 0 <= self.index < self.count:
            raise ValueError(f"shard={self.index!r} must be in [0, num_shards={self.count}).")

    def root(self, builder: tfds.core.DatasetBuilder) -> str:
        """The folder holding every shard of `builder`'s dataset."""
        if self.folder:
            return os.path.expanduser(self.folder)
        config = builder.builder_config.name if builder.builder_config else "default"
        return os.path.join(
            os.fspath(builder.data_dir_root), builder.name, config, f"{builder.version}.shards"
        )

    def shard_folder(self, builder: tfds.core.DatasetBuilder, index: int | None = None) -> str:
        """The folder of shard `index` (default: this spec's)."""
        index = self.index if index is None else index
        return os.path.join(self.root(builder), f"shard-{index:05d}-of-{self.count:05d}")


_SHARDED: ShardedBuild | None = None


@contextlib.contextmanager
def sharded_build(spec: ShardedBuild) -> Iterator[ShardedBuild]:
    """Makes every `generate_splits` in this context write or combine shards (see ShardedBuild)."""
    global _SHARDED
    previous, _SHARDED = _SHARDED, spec
    try:
        yield spec
    finally:
        _SHARDED = previous


class ShardWritten(Exception):
    """A shard's records are written (`args[0]`: its folder); the build stops there on purpose,
    before tfds finalises anything."""


class MissingShard(errors.MissingData):
    """Combining found a shard missing, unfinished or made from other inputs (a data error:
    exit status 2, the message names the shard and the command that makes it)."""


def shard_range(num_items: int, index: int, count: int) -> tuple[int, int]:
    """[lo, hi): the records of a split of `num_items` that shard `index` of `count` makes."""
    return num_items * index // count, num_items * (index + 1) // count


_SHARD_INFO = "shard.json"  # written last: a shard folder without it is unfinished
_COPY_CHUNK = 64  # records read at once when combining shards


def _shard_identity(builder: tfds.core.DatasetBuilder, split_jobs: Mapping[str, Any]) -> dict:
    """What a shard and the combining build must agree on: the dataset, its variant (the name
    is the fingerprint of its settings and inputs) and every split's record count."""
    return {
        "dataset": builder.name,
        "config": builder.builder_config.name if builder.builder_config else "",
        "version": str(builder.version),
        "splits": {split: len(items) for split, (_, items) in split_jobs.items()},
    }


# Turns the results of a split's fn over its items into its records (default: one record each).
Expand = Callable[[Iterator[Any]], Iterable[bytes]]


def begin_splits(
    builder: tfds.core.DatasetBuilder,
    split_jobs: Mapping[str, tuple[Callable[[_T], Any], Sequence[_T]]],
    *,
    num_workers: int | None = None,
    expand: Expand | None = None,
) -> None:
    """Call before writing a builder's splits (`generate_splits` does): in a sharded build
    (`sharded_build`), writes this shard and raises `ShardWritten`, or checks every shard
    before they are combined (`check_shards`); outside one, does nothing."""
    if _SHARDED is None:
        return
    if _SHARDED.index is not None:
        write_shard(builder, split_jobs, _SHARDED, num_workers=num_workers, expand=expand)
        raise ShardWritten(_SHARDED.shard_folder(builder))
    check_shards(builder, split_jobs, _SHARDED)


@contextlib.contextmanager
def split_records(
    builder: tfds.core.DatasetBuilder,
    split: str,
    fn: Callable[[_T], Any],
    items: Sequence[_T],
    workers: int,
    expand: Expand | None = None,
) -> Iterator[Iterable[bytes]]:
    """The records of one split, in order: fn over items in `workers` processes
    (`map_in_order`, then `expand`), or, when combining shards, the shards' records."""
    if _SHARDED is not None:
        yield _shard_records(builder, split, _SHARDED)
        return
    with map_in_order(fn, items, workers) as results:
        yield results if expand is None else expand(results)


def write_shard(
    builder: tfds.core.DatasetBuilder,
    split_jobs: Mapping[str, tuple[Callable[[_T], Any], Sequence[_T]]],
    spec: ShardedBuild,
    *,
    num_workers: int | None = None,
    expand: Expand | None = None,
) -> str:
    """Writes shard `spec.index` of every split (`<split>.array_record`, records in order) and
    then `shard.json`; returns the shard's folder. Worker processes make the records as in a
    whole build (`num_workers`: None = every CPU of this machine); `expand` as in
    `split_records`."""
    folder = spec.shard_folder(builder)
    if os.path.exists(folder):
        shutil.rmtree(folder)  # a shard is rewritten whole
    os.makedirs(folder)
    start = time.perf_counter()
    for split, (fn, items) in split_jobs.items():
        lo, hi = shard_range(len(items), spec.index, spec.count)
        workers = resolve_workers(num_workers, hi - lo)
        path = os.path.join(folder, f"{split}.array_record")
        writer = array_record_module.ArrayRecordWriter(path, ARRAY_RECORD_OPTIONS)
        try:
            with map_in_order(fn, items[lo:hi], workers) as results:
                for record in results if expand is None else expand(results):
                    writer.write(record)
        finally:
            writer.close()
    identity = _shard_identity(builder, split_jobs) | {"index": spec.index, "count": spec.count}
    with open(os.path.join(folder, _SHARD_INFO + ".tmp"), "w") as f:
        json.dump(identity, f, indent=1)
    os.replace(os.path.join(folder, _SHARD_INFO + ".tmp"), os.path.join(folder, _SHARD_INFO))
    logging.info(
        "%s/%s: wrote shard %d of %d (%s) in %.1f s to %s.",
        builder.name,
        identity["config"],
        spec.index,
        spec.count,
        ", ".join(
            f"{split} {hi - lo}"
            for split, (_, items) in split_jobs.items()
            for lo, hi in [shard_range(len(items), spec.index, spec.count)]
        ),
        time.perf_counter() - start,
        folder,
    )
    return folder


def check_shards(
    builder: tfds.core.DatasetBuilder, split_jobs: Mapping[str, Any], spec: ShardedBuild
) -> None:
    """Checks, before anything is written, that every shard of `spec` is finished and was made
    from the same dataset variant and splits as this build.

    Raises:
      MissingShard: naming the first shard that is absent, unfinished or different, and the
        command that makes it.
    """
    want = _shard_identity(builder, split_jobs)
    for index in range(spec.count):
        folder = spec.shard_folder(builder, index)
        make = f"run the same command with --shard={index} --num_shards={spec.count}"
        info_path = os.path.join(folder, _SHARD_INFO)
        if not os.path.isfile(info_path):
            state = "is unfinished" if os.path.isdir(folder) else "is missing"
            raise MissingShard(
                f"Shard {index} of {spec.count} of {builder.name}/{want['config']} {state} "
                f"({folder}): {make}, or copy its folder there from the machine that made it."
            )
        with open(info_path) as f:
            got = json.load(f)
        got_identity = {k: got.get(k) for k in want}
        if got_identity != want or got.get("count") != spec.count:
            raise MissingShard(
                f"Shard {index} of {spec.count} in {folder} was made from other inputs or "
                f"settings ({got_identity} with {got.get('count')} shards; this build is "
                f"{want} with {spec.count}): {make} with this build's settings and data."
            )


def _shard_records(
    builder: tfds.core.DatasetBuilder, split: str, spec: ShardedBuild
) -> Iterator[bytes]:
    """Every record of `split`, shard after shard, in order (`check_shards` passed)."""
    for index in range(spec.count):
        path = os.path.join(spec.shard_folder(builder, index), f"{split}.array_record")
        reader = array_record_module.ArrayRecordReader(path)
        try:
            n = reader.num_records()
            for begin in range(0, n, _COPY_CHUNK):
                yield from reader.read(begin, min(n, begin + _COPY_CHUNK))
        finally:
            reader.close()


def remove_stale_builds(config_dir: str, name: str, min_age_s: float = 600.0) -> None:
    """Deletes tfds' temporary build folders (incomplete.*) left by interrupted builds of `name`.

    Folders touched in the last `min_age_s` seconds are kept: another process may be building.
    """
    if not os.path.isdir(config_dir):
        return
    for entry in os.scandir(config_dir):
        if entry.name.startswith("incomplete.") and entry.is_dir():
            if time.time() - entry.stat().st_mtime >= min_age_s:
                logging.warning("Removing %s, left by an interrupted %s build.", entry.path, name)
                shutil.rmtree(entry.path, ignore_errors=True)


def _prepared_remote(
    cls: type[tfds.core.DatasetBuilder], config: tfds.core.BuilderConfig, data_dir: str
) -> tfds.core.DatasetBuilder:
    """The builder of a dataset already built in a remote data_dir (gs://, s3://, ...).

    tfds finds it and reads its metadata through etils.epath (fsspec's gcsfs / s3fs without
    TensorFlow); grain reads its records with array_record's reader. Nothing is built there.

    Raises:
      RemotePathError: the filesystem library is missing, or the dataset is not built there.
    """
    try:
        builder = cls(config=config, data_dir=data_dir, file_format="array_record")
        prepared = builder.is_prepared()
    except ImportError as e:  # fsspec without the package of this scheme
        raise paths.RemotePathError(
            f"data.data_dir={data_dir!r}: tfds reads a remote data_dir through etils.epath, "
            f"which without TensorFlow uses fsspec, and fsspec says: {e} (gcsfs for gs://, "
            "s3fs for s3://)."
        ) from None
    if not prepared:
        raise paths.RemotePathError(
            f"data.data_dir={data_dir!r} does not hold {cls.name}/{config.name}, and adc_jax "
            "builds datasets on a local disk only (a file lock, temporary files from worker "
            "processes). Build it with a local data.data_dir (a first run, or "
            "tools/make_synthetic.py for synthetic_adc), copy its folder "
            f"{cls.name}/{config.name} into {data_dir.rstrip('/')}/{cls.name}/, and run "
            "again: built datasets are read from a remote data_dir."
        )
    return builder


def prepare_once(
    cls: type[tfds.core.DatasetBuilder], config: tfds.core.BuilderConfig, data_dir: str
) -> tuple[tfds.core.DatasetBuilder, float | None]:
    """The prepared builder `cls(config)` in `data_dir`, building it if missing.

    Processes that build the same variant at once (several hosts on a shared file system) take
    turns under a file lock in the variant's folder: the first builds, the others find it
    prepared. A partial build (not prepared) and stale incomplete.* folders are removed first;
    tfds renames its temporary folder only when every split is written, so an interrupted build
    is never read back.

    A remote data_dir (gs://, ...) is only read: the dataset must already be built there
    (`_prepared_remote`).

    Returns:
      (builder, seconds the build took, or None when it was already built).
    """
    if paths.is_remote(data_dir):
        return _prepared_remote(cls, config, data_dir), None
    builder = cls(config=config, data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return builder, None
    config_dir = os.path.dirname(builder.data_dir)
    os.makedirs(config_dir, exist_ok=True)
    with open(os.path.join(config_dir, ".build.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as e:  # file systems without locks: build without one
            logging.warning("Could not lock %s (%s); building without a lock.", lock.name, e)
        if builder.is_prepared():
            logging.info("%s/%s was built by another process.", cls.name, config.name)
            # A new builder reads the split metadata that this one was created without.
            return cls(config=config, data_dir=data_dir, file_format="array_record"), None
        if os.path.exists(builder.data_dir):
            logging.warning(
                "%s is not a complete build; removing it and building again.", builder.data_dir
            )
            shutil.rmtree(builder.data_dir)
        remove_stale_builds(config_dir, cls.name)
        sources = getattr(config, "sources", None)
        if sources is not None:
            source_files.before_build(os.path.dirname(config_dir), builder.data_dir, sources)
        logging.info("Building %s/%s in %s.", cls.name, config.name, builder.data_dir)
        start = time.perf_counter()
        builder.download_and_prepare(
            download_dir=os.path.join(data_dir, "downloads"),
            download_config=tfds.download.DownloadConfig(
                download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
            ),
        )
        if sources is not None:
            source_files.after_build(builder.data_dir, sources)
        return builder, time.perf_counter() - start
