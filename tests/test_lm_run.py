"""End-to-end: the GPT-2 decoder configs train, resume, evaluate and caption.

`configs/late_sdd_gpt2.py:smoke` (prefix conditioning) on the session's smoke dataset, with the
random tiny GPT-2 written on first use; `configs/adiff_gpt2.py:cld,smoke,cross` (cross
conditioning, tier prompts) on a generated ADIFF copy. What is checked is the plumbing (a random
tiny LM captions nothing well in 4 steps): the LM tokenizer in the workdir, a resumed run equal to
an uninterrupted one, per-tier evaluation, captioning, and clear failures for a bad lm_path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from adc_jax import caption, rundir, train
from adc_jax import config as config_lib
from adc_jax.data.lm_tokenizer import LMTokenizer
from tests.adiff_fixture import make_adiff_fixture
from tests.conftest import REPO_ROOT, config_path, load_config


def _train(config, workdir: str) -> dict:
    config_lib.validate(config)
    os.makedirs(workdir, exist_ok=True)
    rundir.write_config(config, workdir)  # as adc_jax.main does
    return train.train_and_evaluate(config, workdir)


def _losses(workdir: str) -> dict[int, float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    return {m["step"]: m["train/loss"] for m in lines if "train/loss" in m}


@pytest.fixture(scope="module")
def gpt2_run(smoke_setup, tmp_path_factory):
    config = load_config("late_sdd_gpt2", "smoke")
    config.data.data_dir = smoke_setup.data_dir
    config.train.num_steps = 4
    config.train.checkpoint_every = 2
    config.train.log_every = 1
    workdir = str(tmp_path_factory.mktemp("gpt2") / "run")
    result = _train(config, workdir)
    return config, workdir, result


def test_the_workdir_holds_the_lm_tokenizer_and_the_run_scores(gpt2_run):
    _, workdir, result = gpt2_run
    vocab = rundir.load_vocabulary(os.path.join(workdir, "vocab.json"))
    assert isinstance(vocab, LMTokenizer) and vocab.tiers == ()
    assert set(result["scores"]) >= {"BLEU_4", "CIDEr"} and result["num_pairs"] > 0
    with open(os.path.join(workdir, "eval", result["predictions_file"])) as f:
        first = json.loads(f.readline())
    assert isinstance(first["prediction"], str)


def test_a_resumed_run_equals_the_uninterrupted_one(gpt2_run, tmp_path):
    config, workdir, _ = gpt2_run
    copy = str(tmp_path / "resumed")
    shutil.copytree(workdir, copy)
    shutil.rmtree(os.path.join(copy, "checkpoints", "4"))  # as if killed after step 2's save
    _train(config, copy)
    assert _losses(copy) == _losses(workdir)
    a = rundir.load_trained(workdir).train_state.state["model"]
    b = rundir.load_trained(copy).train_state.state["model"]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_caption_two_clips(gpt2_run):
    captioner = caption.Captioner.from_workdir(gpt2_run[1])
    rng = np.random.default_rng(0)
    clips = [0.1 * rng.standard_normal(16000).astype(np.float32) for _ in range(2)]
    for beam in (1, 2):
        ((text, score), *_) = captioner.caption(*clips, beam_size=beam, nbest=1)
        assert isinstance(text, str) and np.isfinite(score)


def test_adiff_with_gpt2_cross_attention_and_tier_prompts(tmp_path):
    fixture = make_adiff_fixture(str(tmp_path / "adiff"), "cld", num_pairs=16, num_clips=8)
    config = load_config("adiff_gpt2", "cld,smoke,cross")
    config.data.csv_dir, config.data.audio_dir = fixture.csv_dir, fixture.audio_dir
    config.data.data_dir = str(tmp_path / "data")
    config.train.num_steps = 2
    config.train.checkpoint_every = 2
    workdir = str(tmp_path / "run")
    result = _train(config, workdir)
    assert set(result["tiers"]) == {"1", "2", "3"}
    vocab = rundir.load_vocabulary(os.path.join(workdir, "vocab.json"))
    assert vocab.tiers == (1, 2, 3) and [len(p) > 0 for p in vocab.prompt_table()] == [
        False,
        True,
        True,
        True,
    ]
    captioner = caption.Captioner.from_workdir(workdir)
    paths = sorted(fixture.clips["eval"].values())[:2]
    for tier in (1, 3):
        ((text, score),) = captioner.caption_files(*paths, beam_size=1, nbest=1, tier=tier)
        assert isinstance(text, str) and np.isfinite(score)


@pytest.mark.parametrize(
    "lm_path, message",
    [
        ("{tmp}/nowhere", "is not a directory"),
        ("{tmp}", "lacks config.json, model.safetensors, tokenizer.json"),
        ("tiny:huge", "names no tiny GPT-2"),
    ],
    ids=["missing", "without_files", "unknown_tiny"],
)
def test_a_bad_lm_path_is_a_clear_error_with_exit_status_2(tmp_path, lm_path, message):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "adc_jax.main",
            f"--config={config_path('late_sdd_gpt2')}:smoke",
            f"--workdir={tmp_path / 'run'}",
            f"--config.model.lm_path={lm_path.format(tmp=tmp_path)}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "config.model.lm_path" in proc.stderr and message in proc.stderr
