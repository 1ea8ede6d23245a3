"""The errors a user's data can cause, which every entry point reports alike.

A dataset that cannot be built from what the user gave it (a class the folder lacks, a CSV
without a needed column, a missing or unreadable audio file, a partial download that lost a
class) raises a `DataError` whose message says what is wrong and what to do. The entry points
(`adc_jax.main`, `adc_jax.pretrain`, `adc_jax.caption`, the data tools) print that message once,
without a traceback, and exit with status 2: the data (or the config naming it) must change,
running again will not help. Any other exception is a bug or a failure of the machine and keeps
its traceback.

The concrete classes also derive from the built-in exception a caller would expect, so code that
catches `ValueError` or `FileNotFoundError` keeps working:

  DataError        the base (never raised itself).
  BadData          ValueError: the data is there but cannot work (a bad CSV row, a class with
                   too few recordings, classes that captions cannot tell apart).
  MissingData      FileNotFoundError: a directory, metadata file or audio file is absent.

`adc_jax.data.audio_io.AudioError` (an unreadable, empty or silent audio file) is a BadData.

All take one argument, the message, so that they survive pickling from a build worker process.

`run_data_tool(main)` runs a data tool's main (tools/make_synthetic.py, tools/listen.py) with
these rules, without importing the training stack that `adc_jax.cli` brings.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


class DataError(Exception):
    """The user's data cannot be used as given; the message says what and what to do."""


class BadData(DataError, ValueError):
    """The data is present but cannot work (bad metadata, too few recordings, ...)."""


class MissingData(DataError, FileNotFoundError):
    """A directory or file the data needs does not exist."""


def run_data_tool(main: Callable[[], _T], io_hint: str) -> _T:
    """`main()`, with a DataError printed once ("Data error: ...") and exit status 2, and an
    I/O error (an unwritable data_dir, a full disk) printed once followed by `io_hint` with exit
    status 1; neither with a traceback."""
    try:
        return main()
    except DataError as e:
        print(f"Data error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        print(f"Error: {type(e).__name__}: {str(e).rstrip('.')}. {io_hint}", file=sys.stderr)
        sys.exit(1)
