"""Tests of the package's structure: dependencies flow one way (no import circle); the inference
entry points do not load the training loop; the data package sits below everything but the
config, and inside it the streams do not load the dataset builders; pretraining does not load the
captioner's loop; the step, the models and the synthetic sounds load no data stack."""

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


def _closure(graph: dict[str, set[str]], module: str) -> set[str]:
    """The adc_jax modules `module` imports, directly or through others."""
    seen, todo = set(), [module]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# What the data package may import from adc_jax outside itself: the config at the bottom. A list of
# what is allowed, so that a package added later is above data without editing this test.
DATA_MAY_IMPORT = ("adc_jax.config", "adc_jax.lm_files")


def test_the_data_package_imports_only_itself_and_the_config():
    graph = import_graph()
    data = [m for m in graph if _in(m, "adc_jax.data")]
    assert "adc_jax.data.synthetic.builder" in data and "adc_jax.data.registry" in data
    for module in data:
        outside = {t for t in graph[module] if not _in(t, "adc_jax.data")}
        assert outside <= set(DATA_MAY_IMPORT), f"{module} imports {sorted(outside)}"
        above = {
            t
            for t in _closure(graph, module)
            for top in ("adc_jax.pretrain", "adc_jax.train", "adc_jax.evaluate", "adc_jax.main")
            if _in(t, top)
        }
        assert not above, f"{module} imports {sorted(above)}"


def test_inside_data_the_streams_do_not_load_the_dataset_builders():
    # The registry is the top of the data package: the entry points pick a dataset through it.
    # The streams (pipeline, vocabulary, eval split) read any built dataset; the builders, every
    # module that derives from the builder base, sit beside them, not below.
    graph = import_graph()
    data = [m for m in graph if _in(m, "adc_jax.data")]
    builders = {m for m in data if "adc_jax.data.builder" in graph[m]}
    assert {"adc_jax.data.synthetic.builder", "adc_jax.data.adiff"} <= builders
    for module in data:
        assert "adc_jax.data.registry" not in graph[module], f"{module} imports the registry"
    for stream in ("adc_jax.data.pipeline", "adc_jax.data.vocab", "adc_jax.data.eval_split"):
        loaded = _closure(graph, stream) & (builders | {"adc_jax.data.builder"})
        assert not loaded, f"{stream} imports {sorted(loaded)}"


def test_pretraining_does_not_load_the_captioners_loop_or_entry_points():
    graph = import_graph()
    captioner = ("adc_jax.train", "adc_jax.evaluate", "adc_jax.main", "adc_jax.caption")
    for module in (m for m in graph if _in(m, "adc_jax.pretrain")):
        loaded = {t for t in _closure(graph, module) if t in captioner}
        assert not loaded, f"{module} imports {sorted(loaded)}"


def test_the_synthetic_sounds_scenes_and_grammar_load_no_dataset_stack():
    # The metrics read the caption grammar, the linear probe synthesises clips: neither builds a
    # dataset, so neither loads tfds or grain.
    code = (
        "import sys, adc_jax.data.synthetic.grammar, adc_jax.data.synthetic.scenes, "
        "adc_jax.data.synthetic.sounds, adc_jax.metrics.difference; "
        "heavy = [m for m in ('tensorflow_datasets', 'grain') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


# The entry points (training, pretraining, dataset builds), the only modules allowed to load the
# command-line layer.
ENTRY_POINTS = ("adc_jax.main", "adc_jax.pretrain.__main__", "adc_jax.build_data")
# What trains: the two trainers' run set-ups and their command lines.
TRAINERS = ("adc_jax.train", "adc_jax.pretrain", "adc_jax.main", "adc_jax.cli")


def test_only_the_entry_points_load_the_command_line_layer():
    graph = import_graph()
    users = sorted(m for m in graph if "adc_jax.cli" in graph[m])
    assert set(users) <= set(ENTRY_POINTS), users
    assert set(ENTRY_POINTS) <= set(users)


def test_the_shared_training_machinery_loads_neither_trainer():
    # The loop, the step plumbing and the config checks serve both trainers: they sit below both.
    graph = import_graph()
    for module in ("adc_jax.loop", "adc_jax.train_state", "adc_jax.config_checks"):
        loaded = {t for t in _closure(graph, module) for top in TRAINERS if _in(t, top)}
        assert not loaded, f"{module} imports {sorted(loaded)}"


# The token ids, and the LM tokenizer (the LM decoder's prompt table): pure Python + tokenizers.
MODELS_MAY_IMPORT_FROM_DATA = ("adc_jax.data.tokenizer", "adc_jax.data.lm_tokenizer")


def test_the_models_load_no_trainer_and_no_data_pipeline():
    # The model code runs on a machine without the data stack (the word ids excepted).
    graph = import_graph()
    models = [m for m in graph if _in(m, "adc_jax.models")]
    assert "adc_jax.models.adc" in models
    for module in models:
        loaded = {
            t
            for t in _closure(graph, module)
            if any(_in(t, top) for top in (*TRAINERS, "adc_jax.loop", "adc_jax.metrics"))
            or (_in(t, "adc_jax.data") and t not in MODELS_MAY_IMPORT_FROM_DATA)
        }
        assert not loaded, f"{module} imports {sorted(loaded)}"
