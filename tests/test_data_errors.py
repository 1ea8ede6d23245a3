"""Tests of adc_jax.data.errors: a mistake in the user's data ends every entry point alike.

`python -m adc_jax.main`, `python -m adc_jax.pretrain`, tools/listen.py and tools/make_synthetic.py
are run as a user runs them, on generated recordings with one mistake each (a class the folder
lacks, a missing column, a missing or unreadable file, a partial download that lost a class):
each exits with status 2, prints its message once as its last line, and shows no traceback. All
the commands start at once; each stops before any model is built.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys

import pytest
from adiff_fixture import make_adiff_fixture
from clip_fixtures import write_esc50, write_folders, write_fsd50k

from adc_jax.data import writer
from adc_jax.data.audio_io import AudioError
from adc_jax.data.errors import BadData, DataError, MissingData

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ESC = ("dog", "church_bells", "crying_baby")
HTML = b"<html><body>404 Not Found</body></html>\n"


def _data(root: str) -> dict[str, str]:
    """Recordings with one mistake each, under root."""
    d = {name: os.path.join(root, name) for name in ("esc", "fsd", "adiff", "folder")}
    write_esc50(d["esc"], ESC, per_fold=2, seconds=1.0)
    write_fsd50k(d["fsd"], {"Rain": "Rain,Water", "Car_passing_by": "Car_passing_by,Vehicle"})
    d["esc_html"] = os.path.join(root, "esc_html")  # a failed download saved as a WAV
    shutil.copytree(d["esc"], d["esc_html"])
    with open(os.path.join(d["esc_html"], "audio", "1-100010-A-0.wav"), "wb") as f:
        f.write(HTML)
    d["esc_partial"] = os.path.join(root, "esc_partial")  # fold 4's dog clips never arrived
    shutil.copytree(d["esc"], d["esc_partial"])
    for name in ("4-100040-A-0.wav", "4-100041-A-0.wav"):
        os.remove(os.path.join(d["esc_partial"], "audio", name))
    fx = make_adiff_fixture(d["adiff"], "cld", num_clips=3, num_pairs=3)
    path = fx.csv_path("train", 1)
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(",answer", ",answr", 1))
    d["adiff_csv"], d["adiff_audio"] = fx.csv_dir, fx.audio_dir
    write_folders(d["folder"], ("a", "b"), per_class=2, ext=".wav", seconds=1.0)
    d["a_file"] = os.path.join(root, "a_file")
    with open(d["a_file"], "w") as f:
        f.write("not a directory")
    with open(os.path.join(d["folder"], "b", "zz_page.wav"), "wb") as f:
        f.write(HTML)
    return d


def _commands(d: dict[str, str], root: str) -> dict[str, list[str]]:
    main = [sys.executable, "-m", "adc_jax.main", "--config=configs/late_sdd.py:smoke"]
    pretrain = [
        sys.executable,
        "-m",
        "adc_jax.pretrain",
        "--config=configs/byola_pretrain.py:smoke",
    ]

    def run(base: list[str], name: str, *flags: str) -> list[str]:
        data = f"--config.data.data_dir={root}/data"
        return [*base, f"--workdir={root}/{name}", data, *flags]

    def pairs(clips: str, classes: str = "dog,church_bells") -> list[str]:
        return [
            "--config.data.name=clip_pairs",
            f"--config.data.clips_dir={clips}",
            f"--config.data.background_dir={d['fsd']}",
            f"--config.data.clip_classes={classes}",
        ]

    listen = [sys.executable, "tools/listen.py", "--data=clip_pairs", "--size=smoke"]
    return {
        "main_unknown_class": run(main, "w1", *pairs(d["esc"], "dog,cat")),
        "main_alike_classes": run(main, "w2", *pairs(d["esc"], "dog,dogs")),
        "main_unreadable_file": run(main, "w3", *pairs(d["esc_html"])),
        "main_partial_download": run(main, "w4", *pairs(d["esc_partial"])),
        "main_missing_column": run(
            main,
            "w5",
            "--config.data.name=adiff",
            "--config.data.adiff_subset=cld",
            f"--config.data.csv_dir={d['adiff_csv']}",
            f"--config.data.audio_dir={d['adiff_audio']}",
        ),
        "pretrain_unreadable_file": run(
            pretrain,
            "w6",
            "--config.data.name=audio_folder",
            f"--config.data.audio_dir={d['folder']}",
        ),
        "listen_unknown_class": [
            *listen,
            f"--clips_dir={d['esc']}",
            f"--background_dir={d['fsd']}",
            "--clip_classes=dog,cat",
            f"--data_dir={root}/data",
            f"--output={root}/listen",
        ],
        "main_data_dir_is_a_file": [
            *main,
            f"--workdir={root}/w7",
            f"--config.data.data_dir={d['a_file']}/datasets",
        ],
        "make_synthetic_bad_size": [
            sys.executable,
            "tools/make_synthetic.py",
            "--size=smoke",
            "--num_train=0",
            f"--data_dir={root}/data",
        ],  # fmt: skip
    }


# case -> (a phrase only its message has, more it must say).
EXPECTED = {
    "main_unknown_class": ("class 'cat' has no recordings", ["church_bells, crying_baby, dog"]),
    "main_alike_classes": ("'dog' and 'dogs' read alike in captions", ["list only one"]),
    "main_unreadable_file": (
        "1-100010-A-0.wav': it is text, not audio",
        ["esc50.csv line 2", "download it again"],
    ),
    "main_partial_download": (
        "foreground recordings its metadata lists for the requested classes are missing",
        ["validation 2 of 4", "'dog' in validation (0 of 2 present)", "Download the missing"],
    ),
    "main_missing_column": ("lacks the column(s) ['answer']", ["cld_development_adiff_fewwords"]),
    "pretrain_unreadable_file": ("zz_page.wav': it is text, not audio", ["audio_folder"]),
    "listen_unknown_class": ("class 'cat' has no recordings", ["data.clip_classes"]),
    "make_synthetic_bad_size": ("--num_train=0: every split needs a positive number", []),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[int, str, str]]:
    """{case: (exit status, stderr, workdir)}, every command started at once."""
    root = str(tmp_path_factory.mktemp("data_errors"))
    commands = _commands(_data(root), root)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    started = {
        case: subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for case, command in commands.items()
    }
    results = {}
    for case, process in started.items():
        try:
            _, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        workdir = next(
            (a.split("=", 1)[1] for a in commands[case] if a.startswith("--workdir=")), ""
        )
        results[case] = (process.returncode, stderr, workdir)
    return results


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_a_data_error_exits_2_with_its_message_once_and_no_traceback(runs, case):
    code, stderr, workdir = runs[case]
    unique, more = EXPECTED[case]
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.count(unique) == 1, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert unique in last
    for text in more:
        assert text in last, (text, last)
    assert ".." not in last.replace("...", "")  # no doubled full stop
    if workdir:  # the run's log keeps the line too (and nothing was trained)
        assert last.startswith("Data error: ")
        with open(os.path.join(workdir, "train.log")) as f:
            assert unique in f.read()
        assert not os.path.exists(os.path.join(workdir, "checkpoints", "1"))


def test_an_unusable_data_dir_is_an_io_error_naming_the_setting(runs):
    code, stderr, _ = runs["main_data_dir_is_a_file"]
    assert code == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]  # nor orbax's, from its cleanup thread
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Error: NotADirectoryError: ")
    assert "Check data.data_dir=" in last and "a_file/datasets" in last
    assert stderr.count("Check data.data_dir=") == 1


def test_data_errors_keep_their_type_across_build_worker_processes():
    for error in (BadData("a bad row."), MissingData("a missing file."), AudioError("x.")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert isinstance(copy, DataError)
    assert isinstance(MissingData("x"), FileNotFoundError) and isinstance(BadData("x"), ValueError)
    with pytest.raises(MissingData, match="item 1 is missing"):
        with writer.map_in_order(_raise_on_one, list(range(64)), 2) as results:
            list(results)


def _raise_on_one(item: int) -> int:
    if item == 1:
        raise MissingData("item 1 is missing.")
    return item
