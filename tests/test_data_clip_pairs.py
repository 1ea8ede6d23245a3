"""Tests of the clip_pairs dataset (adc_jax/data/clip_pairs.py) and of planning pairs over
recordings (`scenes.RecordedSources`); reading the recordings themselves is
tests/test_data_clip_sources.py. Recordings are generated in each of the three layouts by
tests/clip_fixtures.py."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
from clip_fixtures import ESC_CLASSES, FOLDER_CLASSES, event_wave, write_folders, write_roots

from adc_jax import config as config_lib
from adc_jax import rundir, train
from adc_jax.data import clip_jams as CJ
from adc_jax.data import clip_pairs as CP
from adc_jax.data import clip_sources as CS
from adc_jax.data.audio_io import AudioError
from adc_jax.data.errors import BadData
from adc_jax.data.features import as_text, to_int16
from adc_jax.data.synthetic import scenes
from adc_jax.data.synthetic.grammar import OPERATIONS, label_phrases, parse_caption
from adc_jax.metrics.difference import difference_accuracy
from tests.conftest import load_config

SR = 16000
SIZES = {"num_train": 24, "num_validation": 8, "num_eval": 8}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, str]:
    """Recordings in every layout: ESC-50 events, FSD50K backgrounds, folder events/backgrounds."""
    return write_roots(str(tmp_path_factory.mktemp("recordings")))


def _spec(roots, **kw) -> CP.ClipPairsSpec:
    args = {
        "clips_dir": roots["esc"],
        "background_dir": roots["fsd"],
        "clip_classes": ",".join(ESC_CLASSES),
        "clip_seconds": 1.0,
        **SIZES,
    }
    return CP.ClipPairsSpec(**{**args, **kw})


@pytest.fixture(scope="module")
def small_build(roots, tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("data"))
    builder = CP.build_clip_pairs(data_dir, _spec(roots), num_workers=1)
    return data_dir, builder


def _records(builder, split):
    source = builder.as_data_source(split)
    return [source[i] for i in range(len(source))]


def _edits(record) -> set[tuple[str, str]]:
    ops, classes = record["edit_ops"], record["edit_classes"]
    return set(zip(map(as_text, ops), map(as_text, classes), strict=True))


# ----------------------------------------------------------------------- layouts and labels


def test_classes_are_named_from_labels_whatever_the_case_and_separators(roots):
    # How labels match is tests/test_data_clip_sources.py. AudioDiffCaps' classes take the
    # synthetic names (and phrases); others a name from the label.
    assert CP.class_name("church_bells") == CP.class_name("Church_bell") == "bells"
    assert CP.class_name("Vehicle_horn_and_car_horn_and_honking") == "horn"
    assert CP.class_name("Crying_baby") == "crying_baby"
    assert label_phrases("crying_baby") == (("the crying baby",), ("a crying baby",))
    assert label_phrases("sea_waves") == (("the sea waves",), ("sea waves",))
    assert CP.scene_name("Car_passing_by") == "car passing by"
    inputs = CP.resolve_inputs(_spec(roots, clip_classes="DOG, Church bells, crying baby"))
    assert [(c.label, c.name) for c in inputs.events] == [
        ("dog", "dog"),
        ("church_bells", "bells"),
        ("crying_baby", "crying_baby"),
    ]
    assert [(c.label, c.name) for c in inputs.scenes] == [
        ("Rain", "rain"),
        ("Car_passing_by", "car passing by"),
    ]


def test_fingerprint_follows_the_inputs(roots, tmp_path):
    base = CP.resolve_inputs(_spec(roots))
    assert CP.resolve_inputs(_spec(roots)).config_name == base.config_name
    assert base.config_name.startswith("n24-8-8_1s_seed0_fp")
    others = {
        CP.resolve_inputs(_spec(roots, seed=1)).config_name,
        CP.resolve_inputs(_spec(roots, clip_classes="dog,church_bells")).config_name,
        CP.resolve_inputs(_spec(roots, clip_seconds=2.0)).config_name,
    }
    copy = str(tmp_path / "esc")
    shutil.copytree(roots["esc"], copy)
    moved = CP.resolve_inputs(_spec(roots, clips_dir=copy))
    assert moved.fingerprint == base.fingerprint  # moving the data does not rebuild
    path = os.path.join(copy, "audio", "1-100010-A-0.wav")
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # replaced, same size
    others.add(CP.resolve_inputs(_spec(roots, clips_dir=copy)).config_name)
    with open(path, "ab") as f:
        f.write(b"\0\0")  # a changed file
    others.add(CP.resolve_inputs(_spec(roots, clips_dir=copy)).config_name)
    assert base.config_name not in others and len(others) == 5


# ------------------------------------------------------------------------- planning


def test_recorded_sources_plan_segments_inside_active_parts():
    rng = np.random.default_rng(0)
    events = {
        cls: tuple((int(rng.integers(0, 8000)), int(rng.integers(2000, 40000))) for _ in range(3))
        for cls in ("dog", "bells", "crying_baby")
    }
    sources = scenes.RecordedSources(events, {"rain": (50000, 9000)}, SR)
    seen = set()
    for i in range(300):
        plan = scenes.plan_pair(np.random.default_rng([4, i]), 2.0, sources)
        assert plan.scene == "rain" and 0 <= plan.background["start"] < 50000
        for e in plan.events1 + plan.events2:
            start, length = events[e.cls][e.source]
            n = int(round(e.duration * SR))
            assert start <= e.start and e.start + n <= start + length
            assert n <= max(1, int(round(0.5 * 2.0 * SR)))  # at most the planned duration
        for op, cls, magnitude in plan.edits:
            seen.add(op)
            e1 = next((e for e in plan.events1 if e.cls == cls), None)
            e2 = next((e for e in plan.events2 if e.cls == cls), None)
            if op == "change":
                assert e1.source != e2.source
                assert (e1.onset, e1.duration, e1.level_db) == (e2.onset, e2.duration, e2.level_db)
            elif op in ("earlier", "later", "louder", "quieter"):
                assert (e1.source, e1.start, e1.duration) == (e2.source, e2.start, e2.duration)
                moved = e2.onset - e1.onset if op in ("earlier", "later") else 0.0
                louder = e2.level_db - e1.level_db if op in ("louder", "quieter") else 0.0
                assert magnitude == pytest.approx(moved + louder)
            else:
                assert (e1 is None) == (op == "add") and (e2 is None) == (op == "remove")
    assert seen == set(OPERATIONS)


# --------------------------------------------------------------------------------- the build


def test_build_records_have_valid_labels_and_captions(small_build):
    _, builder = small_build
    classes = {"dog", "bells", "crying_baby"}
    inputs = builder.builder_config.inputs
    for split, size in SIZES.items():
        split = split[len("num_") :]
        records = _records(builder, split)
        assert len(records) == size
        allowed = {r.path for c in inputs.events + inputs.scenes for r in c.recordings[split]}
        labels = {}
        for i, r in enumerate(records):
            assert as_text(r["key"]) == f"{split}_{i:06d}"
            for name in ("audio1", "audio2"):
                assert r[name].dtype == np.int16 and r[name].shape == (SR,)
                assert np.abs(r[name]).max() <= 0.9 * 32767 + 1
            assert as_text(r["scene"]) in {"rain", "car passing by"}
            edits = _edits(r)
            labels[as_text(r["key"])] = sorted(edits)
            assert 1 <= len(edits) <= 2 and {op for op, _ in edits} <= set(OPERATIONS)
            assert {cls for _, cls in edits} <= classes
            captions = [as_text(c) for c in r["captions"]]
            assert len(set(captions)) == 5
            assert all(parse_caption(c, sorted(classes)) == edits for c in captions), captions
            recipe = json.loads(as_text(r["recipe"]))
            clips = recipe["clips"]
            assert recipe["sample_rate"] == SR and recipe["clip_samples"] == SR
            assert {ev["file"] for c in clips for ev in c["events"]} | {
                c["background"]["file"] for c in clips
            } <= allowed  # only this split's recordings
            _check_edits(r, clips)
        # The references score perfectly; the classes come from the labels.
        refs = {k: as_text(r["captions"][0]) for k, r in zip(labels, records, strict=True)}
        assert difference_accuracy(refs, labels)["exact_set_accuracy"] == 1.0


def _check_edits(record, clips) -> None:
    """Each edit is what the recipe does: events only in one clip, gains, onsets, files."""
    first = {ev["class"]: ev for ev in clips[0]["events"]}
    second = {ev["class"]: ev for ev in clips[1]["events"]}
    assert len(first) == len(clips[0]["events"]) and len(second) == len(clips[1]["events"])
    assert clips[0]["background"] == clips[1]["background"]
    edited = set()
    for op, cls, magnitude in zip(
        map(as_text, record["edit_ops"]),
        map(as_text, record["edit_classes"]),
        record["edit_magnitudes"],
        strict=True,
    ):
        edited.add(cls)
        e1, e2 = first.get(cls), second.get(cls)
        if op == "add":
            assert e1 is None and e2 is not None
        elif op == "remove":
            assert e2 is None and e1 is not None
        elif op in ("louder", "quieter"):
            assert 20 * np.log10(e2["gain"] / e1["gain"]) == pytest.approx(magnitude, abs=1e-3)
            assert abs(magnitude) >= 6.0 and (magnitude > 0) == (op == "louder")
        elif op == "change":
            assert e1["file"] != e2["file"] and e1["onset"] == e2["onset"]
            assert e1["length"] == e2["length"]
        else:
            assert (e2["onset"] - e1["onset"]) / SR == pytest.approx(magnitude, abs=1e-3)
            assert (e1["file"], e1["start"]) == (e2["file"], e2["start"])
            assert abs(magnitude) >= 0.25 - 1e-3 and (magnitude < 0) == (op == "earlier")
    for cls in set(first) & set(second) - edited:  # untouched events are the same
        assert first[cls] == second[cls]


def test_render_recipe_reproduces_the_stored_audio(small_build, roots):
    _, builder = small_build
    for split in CS.SPLITS:
        for r in _records(builder, split)[:4]:
            audio1, audio2 = CP.render_recipe(r["recipe"], roots["esc"], roots["fsd"])
            np.testing.assert_array_equal(to_int16(audio1), r["audio1"])
            np.testing.assert_array_equal(to_int16(audio2), r["audio2"])
    recipe = json.loads(as_text(_records(builder, "eval")[0]["recipe"]))
    clip = next(c for c in recipe["clips"] if c["events"])
    clip["events"][0]["start"] = 10**7  # past the end of the file
    with pytest.raises(ValueError, match="has only"):
        CP.render_recipe(recipe, roots["esc"], roots["fsd"])


def test_same_inputs_and_seed_give_the_same_bytes(small_build, roots, tmp_path):
    data_dir, builder = small_build
    again = CP.build_clip_pairs(str(tmp_path / "again"), _spec(roots), num_workers=1)
    assert again.data_dir != builder.data_dir
    names = sorted(n for n in os.listdir(builder.data_dir) if "array_record" in n)
    assert names and names == sorted(n for n in os.listdir(again.data_dir) if "array_record" in n)
    for name in names:
        with open(os.path.join(builder.data_dir, name), "rb") as f1:
            with open(os.path.join(again.data_dir, name), "rb") as f2:
                assert f1.read() == f2.read(), name
    # A larger train split mixed in worker processes starts with the same pairs.
    bigger = CP.build_clip_pairs(
        str(tmp_path / "bigger"), _spec(roots, num_train=64), num_workers=2
    )
    small, large = builder.as_data_source("train"), bigger.as_data_source("train")
    for i in range(len(small)):
        for field in ("audio1", "audio2", "recipe", "captions"):
            np.testing.assert_array_equal(small[i][field], large[i][field])
    # The build is reused, not redone.
    assert CP.build_clip_pairs(data_dir, _spec(roots)).data_dir == builder.data_dir


def test_folder_layout_with_classes_named_from_labels(roots, tmp_path):
    spec = CP.ClipPairsSpec(
        clips_dir=roots["folders"],
        background_dir=roots["folder_bg"],
        clip_classes=",".join(FOLDER_CLASSES),
        background_classes="rain",
        num_train=6,
        num_validation=3,
        num_eval=3,
        clip_seconds=1.0,
    )
    builder = CP.build_clip_pairs(str(tmp_path), spec, num_workers=1)
    records = _records(builder, "train") + _records(builder, "eval")
    captions = [as_text(c) for r in records for c in r["captions"]]
    labels = {as_text(r["key"]): sorted(_edits(r)) for r in records}
    assert {cls for edits in labels.values() for _, cls in edits} <= {"dog", "sea_waves", "hen"}
    assert any("sea waves" in c or " hen" in c for c in captions)
    predictions = {as_text(r["key"]): as_text(r["captions"][1]) for r in records}
    assert difference_accuracy(predictions, labels)["exact_set_accuracy"] == 1.0
    r = records[0]
    audio1, _ = CP.render_recipe(r["recipe"], roots["folders"], roots["folder_bg"])
    np.testing.assert_array_equal(to_int16(audio1), r["audio1"])


def test_listen_tool_writes_pairs_and_checks_their_recipes(small_build, roots, tmp_path):
    data_dir, builder = small_build
    spec = importlib.util.spec_from_file_location(
        "listen", os.path.join(REPO, "tools", "listen.py")
    )
    listen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(listen)
    out = tmp_path / "listen"
    listen.main(
        [
            "--data=clip_pairs",
            f"--clips_dir={roots['esc']}",
            f"--background_dir={roots['fsd']}",
            f"--clip_classes={','.join(ESC_CLASSES)}",
            "--size=smoke",
            "--num_train=24",
            "--num_validation=8",
            "--num_eval=8",
            "--clip_seconds=1",
            f"--data_dir={data_dir}",
            f"--output={out}",
            "--num=2",
        ]
    )
    stored = _records(builder, "eval")
    for i in range(2):
        wav, sr = sf.read(out / f"eval_{i:06d}_2.wav", dtype="int16")
        assert sr == SR and np.array_equal(wav, stored[i]["audio2"])
        text = (out / f"eval_{i:06d}.txt").read_text()
        key = f"eval_{i:06d}"
        assert f"render check: {key}_1.jams and _2.jams re-render within 0 int16 step(s)" in text
        # Both clips' JAMS files hold the stored recipe (tests/test_data_clip_jams.py).
        recipe = CJ.read_pair(str(out / f"{key}_1.jams"), str(out / f"{key}_2.jams"))
        assert recipe == json.loads(as_text(stored[i]["recipe"]))
        assert f"caption 1: {as_text(stored[i]['captions'][0])}" in text


# ------------------------------------------------------------------------------ bad inputs


def _copy(roots, name, tmp_path) -> str:
    path = str(tmp_path / name)
    shutil.copytree(roots[name], path)
    return path


def test_metadata_without_a_column_names_the_file_and_the_column(roots, tmp_path):
    esc = _copy(roots, "esc", tmp_path)
    csv_path = os.path.join(esc, "meta", "esc50.csv")
    with open(csv_path) as f:
        lines = f.read().splitlines()
    with open(csv_path, "w") as f:  # drop the fold column
        f.write(
            "\n".join(",".join(x for j, x in enumerate(ln.split(",")) if j != 1) for ln in lines)
        )
    with pytest.raises(ValueError, match=r"esc50\.csv.*\['fold'\]"):
        CP.resolve_inputs(_spec(roots, clips_dir=esc))
    fsd = _copy(roots, "fsd", tmp_path)
    dev = os.path.join(fsd, "FSD50K.ground_truth", "dev.csv")
    with open(dev) as f:
        text = f.read().replace("fname,labels,mids,split", "fname,labels,mids,subset", 1)
    with open(dev, "w") as f:
        f.write(text)
    with pytest.raises(ValueError, match=r"dev\.csv.*\['split'\]"):
        CP.resolve_inputs(_spec(roots, background_dir=fsd))


def test_a_row_naming_a_missing_file_names_the_csv_and_the_row(roots, tmp_path):
    esc = _copy(roots, "esc", tmp_path)
    os.remove(os.path.join(esc, "audio", "4-101041-A-1.wav"))
    with pytest.raises(FileNotFoundError, match=r"esc50\.csv line \d+ names .*4-101041-A-1\.wav"):
        CP.resolve_inputs(_spec(roots, clips_dir=esc))


def test_an_unreadable_or_silent_file_names_the_file(roots, tmp_path):
    esc = _copy(roots, "esc", tmp_path)
    bad = os.path.join(esc, "audio", "5-100051-A-0.wav")
    with open(bad, "wb") as f:
        f.write(b"RIFF not really a wave file" * 10)
    with pytest.raises(AudioError, match=r"esc50\.csv line 11: Cannot read .*5-100051-A-0\.wav"):
        CP.build_clip_pairs(str(tmp_path / "data"), _spec(roots, clips_dir=esc), num_workers=1)
    sf.write(bad, np.zeros(44100, np.float32), 44100, subtype="PCM_16")
    with pytest.raises(AudioError, match=r"5-100051-A-0\.wav' is silent"):
        CP.build_clip_pairs(str(tmp_path / "data"), _spec(roots, clips_dir=esc), num_workers=1)
    # Nothing of the failed builds is read back.
    config_dir = os.path.join(str(tmp_path / "data"), "clip_pairs")
    assert not any(
        os.path.isfile(os.path.join(root, "dataset_info.json"))
        for root, _, _ in os.walk(config_dir)
    )


def test_short_esc50_clips_fail_below_min_clip_fraction(roots, tmp_path):
    esc = _copy(roots, "esc", tmp_path)
    short = os.path.join(esc, "audio", "2-102021-A-2.wav")
    sf.write(short, event_wave(2, 0, 1.0), 44100, subtype="PCM_16")
    spec = _spec(roots, clips_dir=esc, min_clip_fraction=0.5)
    with pytest.raises(AudioError, match=r"shorter than 2\.5 s.*2-102021-A-2\.wav"):
        CP.build_clip_pairs(str(tmp_path / "data"), spec, num_workers=1)


def test_a_class_without_recordings_names_the_class_the_directory_and_the_classes(roots):
    with pytest.raises(ValueError, match="'unicorn'") as e:
        CP.resolve_inputs(_spec(roots, clip_classes="dog,unicorn"))
    message = str(e.value)
    assert roots["esc"] in message and "church_bells, crying_baby, dog" in message
    # The default backgrounds (FSD50K's Rain and Car_passing_by) are not in this ESC-50 copy.
    with pytest.raises(ValueError, match="'Rain'.*ESC-50 layout.*data.background_dir"):
        CP.resolve_inputs(_spec(roots, background_dir="", background_classes=""))


def test_classes_with_too_few_recordings_or_ambiguous_captions_are_refused(roots, tmp_path):
    few = str(tmp_path / "few")
    write_folders(few, ("dog", "hen"), per_class=4, seconds=0.5)
    with pytest.raises(ValueError, match=r"'dog'.*too few recordings.*'validation': 1"):
        CP.resolve_inputs(_spec(roots, clips_dir=few, clip_classes="dog,hen"))
    # Phrased alike ("the passing car" names both), and parsed back wrongly too.
    with pytest.raises(BadData, match="'car' and 'passing car' read alike in captions"):
        CP.resolve_inputs(_spec(roots, clip_classes="car,passing car"))
    # Parsed back right, but a reader cannot tell "add a dog" from "add dogs".
    with pytest.raises(BadData, match="'dog' and 'dogs' read alike in captions"):
        CP.resolve_inputs(_spec(roots, clip_classes="dog,dogs"))
    with pytest.raises(BadData, match="'crying_baby' and 'Crying babies' read alike"):
        CP.resolve_inputs(_spec(roots, clip_classes="crying_baby,Crying babies"))
    with pytest.raises(ValueError, match="same event class"):
        CP.resolve_inputs(_spec(roots, clip_classes="church_bells,Church_bell"))
    with pytest.raises(ValueError, match="two or more foreground classes"):
        CP.resolve_inputs(_spec(roots, clip_classes="dog"))
    with pytest.raises(ValueError, match="foreground.*and background"):
        CP.resolve_inputs(_spec(roots, clip_classes="dog,Rain", background_classes="rain"))


# ------------------------------------------------------------------------------- end to end


def test_a_smoke_run_trains_and_scores_difference_accuracy_on_clip_pairs(roots, tmp_path):
    """`adc_jax.main`'s training on clip_pairs: the dataset is built from the config, the run
    trains, and the eval reports difference accuracy over the user's classes."""
    config = load_config("late_sdd", "smoke")
    config.data.name = "clip_pairs"
    config.data.clips_dir = roots["esc"]
    config.data.background_dir = roots["fsd"]
    config.data.clip_classes = ",".join(ESC_CLASSES)
    config.data.data_dir = str(tmp_path / "data")
    config.data.num_train, config.data.num_validation, config.data.num_eval = 16, 8, 8
    config.train.num_steps = 2
    config.train.checkpoint_every = 2
    config.train.batch_size = 8
    config_lib.validate(config)
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    rundir.write_config(config, workdir)
    result = train.train_and_evaluate(config, workdir)
    assert result["dataset"] == "clip_pairs" and result["num_pairs"] == 8
    accuracy = result["difference_accuracy"]
    assert 0.0 <= accuracy["exact_set_accuracy"] <= 1.0
    baseline = result["baseline"]["difference_accuracy"]["exact_set_accuracy"]
    assert 0.0 <= baseline <= 1.0
    assert os.path.isdir(os.path.join(config.data.data_dir, "clip_pairs"))


def test_pairs_without_a_difference_are_built_named_captioned_and_rendered(roots, tmp_path):
    spec = _spec(roots, no_change_fraction=0.4)
    builder = CP.build_clip_pairs(str(tmp_path), spec, num_workers=1)
    assert builder.builder_config.name.startswith(spec.variant_name)
    assert "_nc0p4_fp" in builder.builder_config.name
    records = _records(builder, "train")
    unchanged = [r for r in records if not len(r["edit_ops"])]
    assert 0 < len(unchanged) < len(records)
    for r in unchanged:
        captions = [as_text(c) for c in r["captions"]]
        assert all(parse_caption(c) == frozenset() for c in captions)
        clips = json.loads(as_text(r["recipe"]))["clips"]
        first, second = clips
        assert first["background"] == second["background"]
        for e1, e2 in zip(first["events"], second["events"], strict=True):
            assert (e1["file"], e1["start"], e1["length"]) == (
                e2["file"],
                e2["start"],
                e2["length"],
            )
            assert abs(20 * np.log10(e2["gain"] / e1["gain"])) <= scenes.NO_CHANGE_LEVEL_JITTER_DB
        audio1, audio2 = CP.render_recipe(r["recipe"], roots["esc"], roots["fsd"])
        np.testing.assert_array_equal(to_int16(audio1), r["audio1"])
        np.testing.assert_array_equal(to_int16(audio2), r["audio2"])
