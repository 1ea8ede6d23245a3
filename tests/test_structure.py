"""Tests of the package's structure: dependencies flow one way (no import circle), and the
inference entry points do not load the training loop."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "adc_jax")


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[: -len(".py")]
    parts = rel.split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """adc_jax module -> the adc_jax modules it imports anywhere in its file (lazy ones too)."""
    modules = {}
    for root, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                modules[_module_name(path)] = path
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from adc_jax import train` imports the module adc_jax.train.
                targets.update(f"{node.module}.{a.name}" for a in node.names)
                targets.add(node.module)
        graph[module] = {t for t in targets if t in modules and t != module and t != "adc_jax"}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node], _ = 2, path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert "adc_jax.train" in graph and "adc_jax.evaluate" in graph["adc_jax.train"]
    assert _find_cycle(graph) is None, f"import circle: {' -> '.join(_find_cycle(graph))}"


def test_evaluation_and_captioning_do_not_load_the_training_loop():
    code = (
        "import sys, adc_jax.evaluate, adc_jax.caption; "
        "assert 'adc_jax.train' not in sys.modules, 'adc_jax.train was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_the_step_and_models_do_not_load_the_data_or_eval_stack():
    # The GPU image has jax/flax/optax/numpy but not tfds, grain, librosa or pycocoevalcap.
    code = (
        "import sys, adc_jax.step, adc_jax.models.adc, adc_jax.models.byola; "
        "heavy = [m for m in ('tensorflow_datasets', 'grain', 'librosa', 'pycocoevalcap', "
        "'soundfile', 'clu') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
