"""End-to-end: `configs/adiff.py` trains, evaluates per tier and captions on a generated ADIFF copy.

The fixture (tests/adiff_fixture.py) has the published CSV layout and Clotho-style file names;
the run is `:smoke` size, so what is checked is the plumbing, not the scores: the tiered
vocabulary, length-bucketed training, per-tier eval results with their own most-frequent-answer
baselines, the ADIFF table, and `caption --tier`.
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

from adc_jax import caption, evaluate, report, rundir, train
from adc_jax import config as config_lib
from adc_jax.data import clip_store, pipeline
from adc_jax.data.tokenizer import Vocabulary, tier_token
from tests.adiff_fixture import make_adiff_fixture
from tests.conftest import REPO_ROOT, load_config


@pytest.fixture(scope="module")
def adiff_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("adiff")
    fixture = make_adiff_fixture(str(root / "adiff"), "cld", num_pairs=16, num_clips=8)
    config = load_config("adiff", "cld,smoke")
    config.data.csv_dir = fixture.csv_dir
    config.data.audio_dir = fixture.audio_dir
    config.data.data_dir = str(root / "data")
    config.train.num_steps = 4
    config.train.checkpoint_every = 4
    config.eval.split = "eval"
    config_lib.validate(config)
    workdir = str(root / "run")
    os.makedirs(workdir)
    rundir.write_config(config, workdir)  # as adc_jax.main does
    result = train.train_and_evaluate(config, workdir)
    return fixture, config, workdir, result


def test_vocabulary_has_tier_tokens_and_punctuation(adiff_run):
    _, _, workdir, _ = adiff_run
    vocab = Vocabulary.load(os.path.join(workdir, "vocab.json"))
    assert vocab.punctuation
    assert vocab.tokens[4:7] == [tier_token(1), tier_token(2), tier_token(3)]


def test_training_ran_on_bucketed_tiered_batches(adiff_run):
    _, config, workdir, _ = adiff_run
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    losses = [m["train/loss"] for m in lines if "train/loss" in m]
    assert lines[-1]["step"] == 4 and losses and np.isfinite(losses).all()
    # The run's own input stream: batches as long as their bucket, every tier's start token.
    data = rundir.prepare_data(config, workdir)
    batches = pipeline.train_dataset(
        clip_store.pair_source(data.builder, "train"), data.vocab, config, stats=data.train_stats
    )
    iterator = iter(batches)
    shapes, starts = set(), set()
    for _ in range(12):
        batch = next(iterator)
        shapes.add(batch["tokens"].shape[1])
        starts |= set(batch["tokens"][:, 0].tolist())
    assert shapes == {32, 64}  # tier 1-2 answers fit 32 tokens; tier 3 needs 64
    assert starts == {data.vocab.index[tier_token(t)] for t in (1, 2, 3)}


def test_eval_scores_every_tier_with_its_own_baseline(adiff_run):
    fixture, _, workdir, result = adiff_run
    expected = fixture.expected["eval"]
    per_tier = {
        t: sum(any(u == t for u, _ in refs) for refs in expected.values()) for t in (1, 2, 3)
    }
    assert set(result["tiers"]) == {"1", "2", "3"}
    for tier, r in result["tiers"].items():
        assert r["num_pairs"] == per_tier[int(tier)]
        assert set(r["scores"]) >= {"BLEU_4", "METEOR", "ROUGE_L", "CIDEr"}
        train_answers = {
            " ".join(a.split()).lower()
            for refs in fixture.expected["train"].values()
            for u, a in refs
            if u == int(tier)
        }
        assert r["baseline"]["caption"][tier] in train_answers  # the tier's own baseline
    assert result["num_pairs"] == sum(per_tier.values())
    md = open(os.path.join(workdir, "eval", "step_4.md")).read()
    assert "tier 3: model" in md


def test_caption_takes_a_tier(adiff_run):
    fixture, _, workdir, _ = adiff_run
    captioner = caption.Captioner.from_workdir(workdir)
    assert captioner.tiers == (1, 2, 3)
    paths = sorted(fixture.clips["eval"].values())[:2]
    for tier in (1, 3):
        ((text, score),) = captioner.caption_files(*paths, beam_size=1, nbest=1, tier=tier)
        assert isinstance(text, str) and np.isfinite(score)
    with pytest.raises(caption.CaptionError, match="tier 4 was not trained.*1, 2, 3"):
        captioner.caption_files(*paths, beam_size=1, nbest=1, tier=4)
    assert caption.main([*paths, f"--workdir={workdir}", "--tier=2", "--beam_size=1"]) == 0
    assert caption.main([*paths, f"--workdir={workdir}", "--tier=5", "--beam_size=1"]) == 1


def test_saved_predictions_rescore_to_the_same_tier_scores(adiff_run):
    _, _, workdir, result = adiff_run
    path = os.path.join(workdir, "eval", result["predictions_file"])
    with open(path) as f:
        lines = [json.loads(line) for line in f]
    assert {line["tier"] for line in lines} == {1, 2, 3}
    assert all(line["key"].endswith(f"@tier{line['tier']}") for line in lines)
    again = evaluate.rescore_predictions(path)
    for tier in ("1", "2", "3"):
        assert again["tiers"][tier]["scores"] == result["tiers"][tier]["scores"]
        assert again["tiers"][tier]["intervals"] == result["tiers"][tier]["intervals"]


def test_adiff_table_has_the_leaderboard_layout(adiff_run, capsys):
    _, _, workdir, result = adiff_run
    table = report.adiff_table([("ours", [result])], "CIDEr").splitlines()
    assert table[0] == "| system | CLD-1 | CLD-2 | CLD-3 | ACD-1 | ACD-2 | ACD-3 |"
    ours = table[2].split(" | ")
    assert ours[1] == f"{100 * result['tiers']['1']['scores']['CIDEr']:.2f}"
    assert ours[4:] == ["-", "-", "- |"]  # ACD was not run
    assert table[3].startswith("| most frequent training answer of the tier")
    assert len(table) == 4  # the published reference row is SPICE only
    spice = report.adiff_table([("ours", [result])], "SPICE").splitlines()
    assert spice[-1] == (
        f"| {report.ADIFF_REFERENCE_ROW} | 11.85 | 23.15 | 16.67 | 12.68 | 22.16 | 17.07 |"
    )
    spec = importlib.util.spec_from_file_location(
        "adiff_table", os.path.join(REPO_ROOT, "tools", "adiff_table.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([f"late SDD={workdir}", "--metrics=CIDEr,SPICE"]) == 0
    out = capsys.readouterr().out
    assert "### CIDEr (x 100)" in out and "| late SDD |" in out and "11.85" in out
    assert tool.main([str(os.path.dirname(workdir))]) == 1  # no eval there: a clear error
