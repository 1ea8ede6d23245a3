"""Shared test helpers: loading the experiment config files the way `config_flags` does."""

from __future__ import annotations

import importlib.util
import os

import ml_collections
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")


def config_path(name: str) -> str:
    return os.path.join(CONFIG_DIR, f"{name}.py")


def load_config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`configs/<name>.py:<arg>` loaded from its file path, as `--config=...` would."""
    spec = importlib.util.spec_from_file_location(f"configs_{name}", config_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()


@pytest.fixture(name="load_config")
def load_config_fixture():
    """The `load_config(name, arg)` helper, for tests that load several configs."""
    return load_config


@pytest.fixture(name="config_path")
def config_path_fixture():
    """The `config_path(name)` helper: path of `configs/<name>.py`."""
    return config_path


@pytest.fixture
def smoke_config():
    """A fresh `configs/late_sdd.py:smoke` (callers may mutate it)."""
    return load_config("late_sdd", "smoke")
