"""Tests of clip_pairs' JAMS files (adc_jax/data/clip_jams.py): both clips of a pair written in
Scaper's format, read back to the exact recipe and rendered to the stored audio bit for bit.
Recordings come from tests/clip_fixtures.py."""

from __future__ import annotations

import argparse
import json
import os
import shutil

import jams
import numpy as np
import pytest
import soundfile as sf
from clip_fixtures import ESC_CLASSES, write_roots
from tool_modules import load_tool

from adc_jax.data import clip_jams as CJ
from adc_jax.data import clip_pairs as CP
from adc_jax.data.errors import BadData, MissingData
from adc_jax.data.features import as_text, to_int16

SR = 16000


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(recordings' roots, the records of every split) of a small build, some without an edit."""
    roots = write_roots(str(tmp_path_factory.mktemp("recordings")))
    spec = CP.ClipPairsSpec(
        clips_dir=roots["esc"],
        background_dir=roots["fsd"],
        clip_classes=",".join(ESC_CLASSES),
        clip_seconds=1.0,
        num_train=12,
        num_validation=4,
        num_eval=8,
        no_change_fraction=0.2,
    )
    builder = CP.build_clip_pairs(str(tmp_path_factory.mktemp("data")), spec, num_workers=1)
    records = []
    for split in ("train", "validation", "eval"):
        source = builder.as_data_source(split)
        records += [source[i] for i in range(len(source))]
    return roots, records


def _write(record, roots, folder, **kw):
    samples = CP.recording_samples(roots["esc"], roots["fsd"], SR)
    edits = list(
        zip(
            map(as_text, record["edit_ops"]),
            map(as_text, record["edit_classes"]),
            map(float, record["edit_magnitudes"]),
            strict=True,
        )
    )
    return CJ.write_pair(
        str(folder),
        as_text(record["key"]),
        record["recipe"],
        samples,
        captions=[as_text(c) for c in record["captions"]],
        edits=edits,
        **kw,
    )


def test_both_clips_render_from_their_jams_files_bit_for_bit(built, tmp_path):
    roots, records = built
    assert any(not len(r["edit_ops"]) for r in records)  # pairs without an edit too
    for r in records:
        path1, path2 = _write(
            r, roots, tmp_path, clips_dir=roots["esc"], background_dir=roots["fsd"]
        )
        assert os.path.basename(path2) == f"{as_text(r['key'])}_2.jams"
        # Reading the two files back gives exactly the stored recipe.
        assert CJ.read_pair(path1, path2) == json.loads(as_text(r["recipe"]))
        # Rendered with the folders the files name, and with folders given.
        for audio, stored in zip(
            CJ.render_pair(path1, path2), (r["audio1"], r["audio2"]), strict=True
        ):
            np.testing.assert_array_equal(to_int16(audio), stored)
        audio1, audio2 = CJ.render_pair(path1, path2, roots["esc"], roots["fsd"])
        np.testing.assert_array_equal(to_int16(audio2), r["audio2"])


def test_files_are_valid_scaper_jams_with_the_pairs_facts(built, tmp_path):
    roots, records = built
    r = records[0]
    recipe = json.loads(as_text(r["recipe"]))
    path1, path2 = _write(r, roots, tmp_path, clips_dir=roots["esc"], background_dir=roots["fsd"])
    for c, path in enumerate((path1, path2), 1):
        jam = jams.load(path, validate=True, strict=True)  # the schema of the jams package
        (ann,) = jam.search(namespace="scaper")
        scaper = ann.sandbox.scaper
        # What scaper.generate_from_jams reads is there.
        for key in ("original_duration", "fg_path", "bg_path", "protected_labels", "sr",
                    "ref_db", "n_channels", "fade_in_len", "fade_out_len", "reverb"):  # fmt: skip
            assert key in scaper, key
        assert scaper["sr"] == SR and scaper["duration"] == 1.0
        assert scaper["fg_path"] == roots["esc"] and scaper["bg_path"] == roots["fsd"]
        clip = recipe["clips"][c - 1]
        values = [obs.value for obs in ann.data]
        bg = next(v for v in values if v["role"] == "background")
        assert bg["source_file"] == os.path.join(roots["fsd"], clip["background"]["file"])
        assert bg["event_time"] == 0.0 and bg["event_duration"] == 1.0 and bg["snr"] == 0.0
        events = sorted((v for v in values if v["role"] == "foreground"), key=lambda v: v["order"])
        assert len(events) == len(clip["events"])
        for v, ev in zip(events, clip["events"], strict=True):
            assert v["source_file"] == os.path.join(roots["esc"], ev["file"])
            assert v["source_time"] == ev["start"] / SR and v["event_time"] == ev["onset"] / SR
            assert v["event_duration"] == ev["length"] / SR and v["label"] == ev["label"]
            assert -60.0 < v["snr"] < 60.0
        meta = jam.sandbox.adc_jax
        assert meta["pair"] == as_text(r["key"]) and meta["clip"] == c
        assert meta["captions"] == [as_text(x) for x in r["captions"]]
        assert [e[0] for e in meta["edits"]] == [as_text(x) for x in r["edit_ops"]]
    # snr is the planned level: a louder/quieter edit moves it by the labelled decibels.
    checked = 0
    for i, r in enumerate(records):
        ops = dict(zip(map(as_text, r["edit_ops"]), map(as_text, r["edit_classes"]), strict=True))
        for op, magnitude in zip(map(as_text, r["edit_ops"]), r["edit_magnitudes"], strict=True):
            if op not in ("louder", "quieter"):
                continue
            paths = _write(r, roots, tmp_path / str(i))
            snr = [
                next(
                    obs.value["snr"]
                    for obs in jams.load(p).search(namespace="scaper")[0].data
                    if obs.value.get("class") == ops[op]
                )
                for p in paths
            ]
            assert snr[1] - snr[0] == pytest.approx(float(magnitude), abs=1e-3)
            checked += 1
    assert checked


def test_relative_files_need_the_folders_and_mismatched_files_are_refused(built, tmp_path):
    roots, records = built
    path1, path2 = _write(records[0], roots, tmp_path / "a")  # no folders: relative names
    with pytest.raises(BadData, match="pass clips_dir"):
        CJ.render_pair(path1, path2)
    audio1, _ = CJ.render_pair(path1, path2, roots["esc"], roots["fsd"])
    np.testing.assert_array_equal(to_int16(audio1), records[0]["audio1"])
    other1, other2 = _write(records[1], roots, tmp_path / "b")
    with pytest.raises(BadData, match="not clips 1 and 2 of one pair"):
        CJ.read_pair(path1, other2)
    with pytest.raises(BadData, match="not clips 1 and 2 of one pair"):
        CJ.read_pair(path2, path1)
    with pytest.raises(MissingData, match="does not exist"):
        CJ.read_pair(str(tmp_path / "missing.jams"), path2)
    plain = tmp_path / "plain.jams"
    jams.JAMS(file_metadata={"duration": 1.0}).save(str(plain))
    with pytest.raises(BadData, match="not written by adc_jax"):
        CJ.read_pair(str(plain), path2)
    broken = tmp_path / "broken.jams"
    broken.write_text("{not json")
    with pytest.raises(BadData, match="not a valid JAMS file"):
        CJ.read_pair(str(broken), path2)


def test_export_tool_writes_every_pair_and_checks_it_renders(built, tmp_path):
    roots, _ = built
    export = load_tool("export_jams")
    data_dir, out = str(tmp_path / "data"), tmp_path / "jams"
    flags = [
        f"--clips_dir={roots['esc']}",
        f"--background_dir={roots['fsd']}",
        f"--clip_classes={','.join(ESC_CLASSES)}",
        "--size=smoke",
        "--num_train=6",
        "--num_validation=2",
        "--num_eval=3",
        "--clip_seconds=1",
        "--num_workers=1",
        f"--data_dir={data_dir}",
    ]
    export.main([*flags, f"--output={out}", "--splits=train,eval"])
    assert sorted(os.listdir(out)) == ["eval", "train"]
    assert len(os.listdir(out / "train")) == 12 and len(os.listdir(out / "eval")) == 6
    spec = clip_pairs_spec(export, flags)
    source = CP.build_clip_pairs(data_dir, spec).as_data_source("eval")  # the tool's build
    for i in range(len(source)):
        key = as_text(source[i]["key"])
        audio1, audio2 = CJ.render_pair(
            str(out / "eval" / f"{key}_1.jams"), str(out / "eval" / f"{key}_2.jams")
        )
        np.testing.assert_array_equal(to_int16(audio1), source[i]["audio1"])
        np.testing.assert_array_equal(to_int16(audio2), source[i]["audio2"])
    # Recordings that changed since the build (same names and lengths) are caught.
    changed = tmp_path / "changed"
    shutil.copytree(roots["esc"], changed)
    for name in os.listdir(changed / "audio"):
        wav, sr = sf.read(changed / "audio" / name, dtype="float32")
        sf.write(changed / "audio" / name, 0.5 * wav, sr, subtype="PCM_16")
    with pytest.raises(BadData, match="changed since the build"):
        CJ.write_split(source, str(tmp_path / "again"), str(changed), roots["fsd"])
    with pytest.raises(SystemExit):  # an unknown split is a usage error
        export.main([*flags, f"--output={out}", "--splits=test"])


def clip_pairs_spec(export, flags):
    """The spec the tool builds for `flags` (its own parsing)."""
    parser = argparse.ArgumentParser()
    export.add_size_flags(parser)
    export.add_clip_pairs_flags(parser)
    return export.clip_pairs_spec(parser.parse_args(flags))
