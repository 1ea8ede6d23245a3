"""Tests of tools/linear_probe.py: the probe, the built-in labelled set, user sets and the CLI.

What is checked: the logistic-regression probe reaches ~100% on separable features and chance
on random labels, and its L2 term shrinks the weights; the built-in set is deterministic,
balanced, mixed as stated (event + background, at the stated SNR range, no clipping), with
train and test instances of their own; ESC-50's folds give the probe's train/test split; the
CLI prints one row per encoder (a converted encoder directory and the random-init mean over
seeds) and writes them as JSON, and the directory's weights and log-mel statistics are the
ones used (the random-init row shares the statistics).
"""

from __future__ import annotations

import json
import os

import byola_fixture
import clip_fixtures
import numpy as np
import pytest
import scipy.stats
from tool_modules import load_tool

from adc_jax.data.synthetic import scenes
from adc_jax.data.synthetic.grammar import EVENT_CLASSES
from adc_jax.data.synthetic.sounds import active_rms

lp = load_tool("linear_probe")

K, D, N_TRAIN, N_TEST = 5, 24, 200, 300


def _blobs(rng, n: int, centres: np.ndarray, noise: float) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n) % centres.shape[0]
    return (centres[y] + noise * rng.normal(size=(n, centres.shape[1]))).astype(np.float32), y


def test_probe_separates_separable_features_and_is_chance_on_random_labels():
    rng = np.random.default_rng(0)
    centres = 4.0 * rng.normal(size=(K, D))
    x, y = _blobs(rng, N_TRAIN, centres, 1.0)
    xt, yt = _blobs(rng, N_TEST, centres, 1.0)
    x[:, 0] = 5.0  # a constant feature must not break the standardisation
    xt[:, 0] = 5.0
    result = lp.probe_accuracy(x, y, xt, yt, K)
    assert result.accuracy >= 0.99
    assert result.probe.grad_norm < 10 * lp.GRAD_TOL  # ran to convergence
    assert set(result.cv_accuracy) == set(lp.L2_GRID)
    # Random labels: nothing to learn, held-out accuracy near chance (1/K = 0.2).
    noise = rng.normal(size=(N_TRAIN, D)).astype(np.float32)
    labels = rng.integers(K, size=N_TRAIN)
    test_noise = rng.normal(size=(N_TEST, D)).astype(np.float32)
    chance = lp.probe_accuracy(noise, labels, test_noise, rng.integers(K, size=N_TEST), K)
    assert 0.1 <= chance.accuracy <= 0.3
    # The L2 term shrinks the weights; the features are standardised by the fitted rows only.
    small = lp.fit_logistic(x, y, K, l2=1e-3)
    large = lp.fit_logistic(x, y, K, l2=1.0)
    assert np.linalg.norm(large.weights) < 0.5 * np.linalg.norm(small.weights)
    half = np.arange(N_TRAIN) < N_TRAIN // 2
    part = lp.fit_logistic(x, y, K, l2=1e-2, weights=half)
    np.testing.assert_allclose(part.mean, x[half].mean(0), rtol=1e-4, atol=1e-4)


def test_cv_folds_are_stratified():
    labels = np.repeat(np.arange(4), 9)
    fold = lp.cv_folds(labels, 3, seed=0)
    for c in range(4):
        assert np.bincount(fold[labels == c], minlength=3).tolist() == [3, 3, 3]
    assert not np.array_equal(fold, lp.cv_folds(labels, 3, seed=1))


def test_builtin_set_is_deterministic_balanced_and_mixed_at_the_stated_snr():
    data = lp.builtin_probe_set(3, 2, seed=0)
    again = lp.builtin_probe_set(3, 2, seed=0)
    other = lp.builtin_probe_set(3, 2, seed=1)
    assert data.classes == EVENT_CLASSES
    for split, per_class in (("train", 3), ("test", 2)):
        assert data.wavs[split].shape == (10 * per_class, lp.SAMPLE_RATE)
        assert data.wavs[split].dtype == np.float32
        assert np.bincount(data.labels[split], minlength=10).tolist() == [per_class] * 10
        assert np.array_equal(data.wavs[split], again.wavs[split])
        assert not np.array_equal(data.wavs[split], other.wavs[split])
        assert (data.lengths[split] == lp.SAMPLE_RATE).all()
    snrs = []
    for split in lp.PROBE_SPLITS:
        for i in range(20):
            clip = lp.probe_clip(split, i)
            assert clip["label"] == i % 10 and clip["scene"] in ("rain", "traffic")
            np.testing.assert_allclose(clip["wav"], clip["event"] + clip["background"], atol=1e-6)
            assert np.abs(clip["wav"]).max() <= scenes.PEAK + 1e-6
            bg_rms = np.sqrt(np.mean(np.square(clip["background"], dtype=np.float64)))
            snr = 20 * np.log10(active_rms(clip["event"], lp.SAMPLE_RATE) / bg_rms)
            assert snr == pytest.approx(clip["snr_db"], abs=0.05)
            snrs.append(snr)
    assert lp.SNR_DB[0] - 0.05 <= min(snrs) and max(snrs) <= lp.SNR_DB[1] + 0.05
    assert max(snrs) - min(snrs) > 0.5 * (lp.SNR_DB[1] - lp.SNR_DB[0])  # spread over the range
    # Clips i and i + 10 * instances are crops of one instance (the same sound, at another
    # SNR, background and offset; 5 s crops take the whole instance); the test split's
    # instances of the class, and its other training instances, are other sounds.
    n = lp.INSTANCES_PER_CLASS * 10

    def event(split: str, i: int) -> np.ndarray:
        return lp.probe_clip(split, i, clip_seconds=5.0)["event"].astype(np.float64)

    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        return abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))

    assert similarity(event("train", 3), event("train", 3 + n)) > 0.999
    assert similarity(event("train", 3), event("test", 3)) < 0.5
    assert similarity(event("train", 3), event("train", 13)) < 0.5


def test_esc50_folds_give_the_train_and_test_split(tmp_path):
    root = str(tmp_path / "ESC-50-master")
    clip_fixtures.write_esc50(root, ["dog", "rain"], per_fold=1, seconds=1.5)
    data = lp.folder_probe_set(root, clip_seconds=1.0)
    assert data.classes == ("dog", "rain")
    assert data.size("train") == 8 and data.size("test") == 2  # folds 1-4 and fold 5
    assert sorted(data.labels["test"].tolist()) == [0, 1]
    assert data.wavs["train"].shape == (8, lp.SAMPLE_RATE)
    assert (data.lengths["train"] == lp.SAMPLE_RATE).all()  # 1.5 s files cropped to 1 s
    with pytest.raises(FileNotFoundError):
        lp.folder_probe_set(str(tmp_path / "missing"))


def test_cli_prints_a_row_per_encoder_and_uses_the_directory_weights(tmp_path, capsys, monkeypatch):
    _, _, encoder_dir = byola_fixture.write_checkpoint(tmp_path)
    out = tmp_path / "rows.jsonl"
    rows = lp.main(
        [
            f"--encoder={encoder_dir}",
            "--seeds=0,1",
            "--train_per_class=3",
            "--test_per_class=2",
            f"--json_out={out}",
        ]
    )
    printed = capsys.readouterr().out
    shape = f"64 x {byola_fixture.CHANNELS}, {byola_fixture.DIM}"
    lines = [line for line in printed.splitlines() if shape in line]
    assert len(lines) == 2
    assert lines[0].startswith(f"pretrained: {encoder_dir}") and "30/20" in lines[0]
    assert lines[1].startswith("random init, seed 0,1") and "(mean of 2)" in lines[1]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [len(r["accuracies"]) for r in records] == [1, 2]
    assert all(0.0 <= a <= 1.0 for r in records for a in r["accuracies"])
    assert records[1]["accuracy"] == pytest.approx(np.mean(records[1]["accuracies"]))
    assert rows[0].shape == (64, byola_fixture.CHANNELS, byola_fixture.DIM)
    # The directory's weights are used: its embeddings are not those of a random init.
    data = lp.builtin_probe_set(1, 1)
    loaded = lp.load_encoder(str(encoder_dir), "pretrained")
    x = data.wavs["train"][:4], data.lengths["train"][:4]
    e_loaded = lp.embed(loaded, *x)
    e_random = lp.embed(lp.random_encoder(loaded.shape, 0), *x)
    assert e_loaded.shape == (4, byola_fixture.DIM) and np.isfinite(e_loaded).all()
    assert not np.allclose(e_loaded, e_random)
    # An encoder exported by adc_jax.pretrain stores its log-mel statistics; the random-init
    # row of its shape is fed the same normalised log-mel.
    meta_path = encoder_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "norm_mean": 0.25, "norm_std": 2.5}))
    used = []
    monkeypatch.setattr(lp, "_row", lambda name, encoders, data: used.append(encoders))
    lp.run(lp.parse_args([f"--encoder={encoder_dir}", "--seeds=3", "--train_per_class=1"]))
    assert [(e.norm_mean, e.norm_std) for es in used for e in es] == [(0.25, 2.5)] * 2
    assert used[1][0].name == "random init (seed 3)"
    with pytest.raises(FileNotFoundError, match="meta.json"):
        lp.main([f"--encoder={tmp_path}", "--train_per_class=1", "--test_per_class=1"])
    assert os.path.isdir(encoder_dir)


def test_rows_of_several_seeds_are_compared_with_random_init_by_welch():
    shape, other = (64, 16, 256), (64, 64, 2048)
    pretrained = lp.Row("pretrained: a, b, c", shape, [0.69, 0.58, 0.63], [0.1] * 3, 261, 84, 1.0)
    single = lp.Row("official: w", shape, [0.70], [0.1], 261, 84, 1.0)
    wide = lp.Row("pretrained: d, e", other, [0.8, 0.7], [0.1] * 2, 261, 84, 1.0)
    random = lp.Row("random init, seed 0,1,2", shape, [0.55, 0.49, 0.52], [0.1] * 3, 261, 84, 1.0)
    pairs = lp.against_random_init([pretrained, single, wide, random])
    # Only the row of several values with a random-init row of its shape is compared.
    assert [r for r, _ in pairs] == [pretrained]
    d = pairs[0][1]
    expected = scipy.stats.ttest_ind(pretrained.accuracies, random.accuracies, equal_var=False)
    assert d.delta == pytest.approx(np.mean(pretrained.accuracies) - np.mean(random.accuracies))
    assert d.p_value == pytest.approx(expected.pvalue) and d.low < d.delta < d.high
    text = lp.format_differences(pairs)
    assert f"pretrained: {100 * d.delta:+.1f} points [" in text and "(3 vs 3 values)" in text
