"""Tests of the ADIFF tfds builder on a tiny copy in the published layout (tests/adiff_fixture.py).

No ADIFF, Clotho or AudioCaps file ships with adc_jax; the fixture writes CSVs with the real ones'
quirks (BOM, quoted commas and line breaks, Clotho-style names, a repeated pair, a pair missing
from one tier) and 1-3 s WAVs at 44.1 kHz.
"""

from __future__ import annotations

import collections
import csv
import glob
import importlib.util
import logging
import os
import re
import shutil
import statistics

import numpy as np
import pytest
import soundfile as sf
from adiff_fixture import make_adiff_fixture
from test_data_caption_file import assert_file_equals_records

from adc_jax.data import adiff, clip_store, features, source_files, writer
from adc_jax.data.audio_io import AudioError, load_audio

CLIP_SECONDS = 2.0
N_MAX = int(CLIP_SECONDS * 16000)


def _records(builder, split: str) -> list[dict]:
    return [
        {
            "key": features.as_text(e["key"]),
            "captions": [features.as_text(c) for c in e["captions"]],
            "tiers": [int(t) for t in features.caption_tiers(e)],
            "audio1": np.array(e["audio1"]),
            "audio2": np.array(e["audio2"]),
            "clips": (int(e["clip1"]), int(e["clip2"])),
            "scene": features.as_text(e["scene"]),
            "recipe": features.as_text(e["recipe"]),
            "edits": (len(e["edit_ops"]), len(e["edit_classes"]), len(e["edit_magnitudes"])),
        }
        for e in clip_store.pair_source(builder, split)
    ]


def _build(fx, data_dir, *, csv_dir=None, audio_dir=None, **kwargs):
    return adiff.build_adiff(
        str(data_dir),
        csv_dir=csv_dir or fx.csv_dir,
        audio_dir=audio_dir or fx.audio_dir,
        subset=kwargs.pop("subset", fx.subset),
        clip_seconds=kwargs.pop("clip_seconds", CLIP_SECONDS),
        num_workers=kwargs.pop("num_workers", 1),
        **kwargs,
    )


@pytest.fixture(scope="module")
def cld(tmp_path_factory):
    """The CLD fixture built once, counting how often each audio file is decoded."""
    root = tmp_path_factory.mktemp("adiff_cld")
    fx = make_adiff_fixture(str(root))
    calls = collections.Counter()
    real = adiff.load_audio

    def counting(path, sample_rate=16000, **kwargs):
        calls[path] += 1
        return real(path, sample_rate, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(adiff, "load_audio", counting)
        builder = _build(fx, root / "data")
    records = {split: _records(builder, split) for split in clip_store.pair_splits(builder)}
    return fx, builder, records, calls


def _not_built(data_dir) -> bool:
    return not glob.glob(os.path.join(str(data_dir), "adiff", "*", str(adiff.Adiff.VERSION)))


def _copy_csvs(fx, tmp_path) -> str:
    copy = str(tmp_path / "csv")
    shutil.copytree(fx.csv_dir, copy)
    return copy


def _rewrite_answer(path: str, index: int, answer: str) -> None:
    """Sets the answer of the index-th row of a CSV (written back with csv's quoting)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    rows[1 + index][-1] = answer
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def _replace_in(path: str, old: str, new: str) -> None:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert old in text
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(old, new, 1))


# ------------------------------------------------------------------------------- file names


def test_csv_names_follow_the_release():
    assert adiff.csv_name("cld", "eval", 1) == "cld_evaluation_adiff_fewwords_answer.csv"
    assert adiff.csv_name("cld", "train", 3) == "cld_development_adiff_detail_answer.csv"
    assert adiff.csv_name("acd", "validation", 2) == "acd_val_adiff_sentence_answer.csv"
    assert adiff.csv_name("acd", "eval", 3) == "acd_test_adiff_detail_answer.csv"
    for bad in (("xyz", "eval", 1), ("acd", "test", 1), ("acd", "eval", 4)):
        with pytest.raises(ValueError, match="is not one of"):
            adiff.csv_name(*bad)


# ---------------------------------------------------------------------------- the records


def test_one_record_per_pair_with_every_tiers_answers(cld):
    fx, builder, records, _ = cld
    assert builder.name == "adiff"
    assert builder.builder_config.name.startswith("cld_fp")
    assert clip_store.pair_splits(builder) == ["train", "validation", "eval"]
    assert builder.info.features.keys() == clip_store.referenced_features_dict().keys()
    for split, clips in fx.clips.items():  # each distinct clip stored once, in its split's store
        assert builder.info.splits[clip_store.clips_split(split)].num_examples == len(clips)
    for split, expected in fx.expected.items():
        got = records[split]
        assert [r["key"] for r in got] == list(expected)  # pairs in order of first occurrence
        for r in got:
            assert list(zip(r["tiers"], r["captions"], strict=True)) == expected[r["key"]]
            assert r["scene"] == "cld" and r["recipe"] == "" and r["edits"] == (0, 0, 0)


def test_repeated_pair_is_merged_and_missing_tier_has_no_captions(cld):
    fx, _, records, _ = cld
    train = {r["key"]: r for r in records["train"]}
    assert len(train) == 8  # 9 + 7 + 8 rows of 8 distinct pairs
    first = fx.rows["train"][1][0]
    merged = train[f"{first.filepath1}|{first.filepath2}"]
    assert merged["tiers"] == [1, 1, 2, 3]  # listed twice in tier 1 (first and last row)
    assert merged["captions"][0] != merged["captions"][1]
    last = fx.rows["train"][1][-2]  # the last pair (the final row is the repeat)
    assert train[f"{last.filepath1}|{last.filepath2}"]["tiers"] == [1, 3]  # absent from tier 2
    # Quoted fields: a comma in a file name, a line break and quotes in an answer.
    assert "Birds singing, distant traffic (2)" in first.filepath1
    detail = merged["captions"][3]
    assert "\n" not in detail and '; it sounds "closer" and' in detail
    assert "  " not in merged["captions"][2]  # runs of spaces collapsed
    assert detail[0] == "T" and detail.endswith(".")  # case and punctuation kept
    counts = adiff.read_split(fx.csv_dir, "cld", "train")
    assert len(counts.pairs) == 8
    assert (counts.rows, counts.repeated) == ({1: 9, 2: 7, 3: 8}, {1: 1, 2: 0, 3: 0})
    assert (counts.missing, counts.skipped) == ({1: 0, 2: 1, 3: 0}, {1: 0, 2: 0, 3: 0})
    assert "8 pairs" in counts.summary() and "1 pair(s) without this tier" in counts.summary()


def test_audio_is_16k_mono_int16_cropped_to_clip_seconds(cld):
    fx, _, records, _ = cld
    lengths = set()
    for split, recs in records.items():
        clips = fx.clips[split]
        for r in recs:
            for name, fp in zip(("audio1", "audio2"), r["key"].split("|"), strict=True):
                full = features.to_int16(load_audio(clips[fp], 16000))  # the stereo one mixed
                assert r[name].dtype == np.int16
                np.testing.assert_array_equal(r[name], full[:N_MAX])
                lengths.add((len(full) > N_MAX, len(r[name])))
    assert (True, N_MAX) in lengths  # 2.4-3 s clips are cropped to 2 s
    assert (False, 16000) in lengths  # a 1 s clip keeps its length (not padded)


def test_each_clip_is_decoded_once_per_split(cld):
    fx, _, _, calls = cld
    every_clip = [path for clips in fx.clips.values() for path in clips.values()]
    assert len(set(every_clip)) == 18  # 6 clips in each of the 3 splits, 8 pairs each
    assert calls == collections.Counter(every_clip)


def test_examples_of_the_tfds_stream_equal_the_written_records(cld):
    _, builder, records, _ = cld
    plans = builder._plans()
    for split, recs in records.items():
        stream = list(builder._generate_examples(plans[split]))
        assert [key for key, _ in stream] == [r["key"] for r in recs]
        for (_, example), r in zip(stream, recs, strict=True):
            assert (example["clip1"], example["clip2"]) == r["clips"]
            assert example["captions"] == r["captions"]
            assert example["caption_tiers"].tolist() == r["tiers"]


def test_caption_files_equal_the_records_tier_by_tier(cld):
    """Start-up reads captions, tiers and keys from the caption files, as from the records."""
    _, builder, _, _ = cld
    for tiers in ((1, 2, 3), (3,)):
        assert_file_equals_records(builder, tiers)


def test_worker_processes_write_the_same_records(tmp_path, monkeypatch, caplog):
    fx = make_adiff_fixture(str(tmp_path / "fx"), splits=("train",), num_clips=3, num_pairs=4)
    monkeypatch.setattr(writer, "MIN_ITEMS_FOR_WORKERS", 1)  # decode 3 clips in 2 processes
    with caplog.at_level(logging.INFO):
        pooled = _records(_build(fx, tmp_path / "pooled", num_workers=2), "train")
    assert "4 pairs over 3 distinct clips, each stored once" in caplog.text
    assert re.search(r"wrote 3 train_clips examples .* 2 processes\)", caplog.text)
    monkeypatch.setattr(writer, "MIN_ITEMS_FOR_WORKERS", 10**9)
    alone = _records(_build(fx, tmp_path / "alone", num_workers=2), "train")
    assert len(pooled) == len(alone) == 4
    for a, b in zip(pooled, alone, strict=True):
        assert a["key"] == b["key"] and a["captions"] == b["captions"]
        np.testing.assert_array_equal(a["audio1"], b["audio1"])
        np.testing.assert_array_equal(a["audio2"], b["audio2"])


def test_acd_subset(tmp_path):
    fx = make_adiff_fixture(str(tmp_path / "fx"), "acd", splits=("train", "eval"), tiers=(1,))
    builder = _build(fx, tmp_path / "data")
    assert builder.builder_config.name.startswith("acd_fp")
    assert clip_store.pair_splits(builder) == ["train", "eval"]  # no val CSV: left out
    recs = _records(builder, "eval")
    assert [r["key"] for r in recs] == list(fx.expected["eval"])
    assert recs[0]["key"].startswith("AudioCapsLarger/test/Y")
    assert all(r["scene"] == "acd" and set(r["tiers"]) == {1} for r in recs)


# -------------------------------------------------------------------------- CSV parsing


def test_bom_header_and_multiline_rows_are_read_with_their_line_numbers(cld, tmp_path):
    fx, _, _, _ = cld
    path = fx.csv_path("train", 1)
    with open(path, "rb") as f:
        assert f.read(3) == b"\xef\xbb\xbf"  # the fixture really has a BOM
    rows, skipped = adiff.read_csv(path, 1)
    assert skipped == 0 and len(rows) == 9
    assert [r.line for r in rows] == [r.line for r in fx.rows["train"][1]] == list(range(2, 11))
    # A BOM before a header whose first column is one the builder needs.
    reordered = tmp_path / "reordered.csv"
    reordered.write_text('\ufefffilepath1,filepath2,answer\na.wav,b.wav,"Louder, closer."\n')
    (row,), _ = adiff.read_csv(str(reordered), 2)
    assert (row.key, row.answer, row.tier, row.line) == ("a.wav|b.wav", "Louder, closer.", 2, 2)
    rows3, _ = adiff.read_csv(fx.csv_path("train", 3), 3)
    lines = [r.line for r in rows3]
    assert lines == [r.line for r in fx.rows["train"][3]]
    assert lines[1] - lines[0] == 2  # each detail answer spans two lines
    assert all(r.tier == 3 for r in rows3)


def test_missing_columns_name_the_csv_and_the_expected_header(cld, tmp_path):
    fx, _, _, _ = cld
    csv_dir = _copy_csvs(fx, tmp_path)
    path = adiff.csv_path(csv_dir, "cld", "eval", 2)
    _replace_in(
        path, "filepath2,caption1,caption2,input,answer", "file2,caption1,caption2,input,text"
    )
    with pytest.raises(ValueError) as info:
        _build(fx, tmp_path / "data", csv_dir=csv_dir)
    message = str(info.value)
    assert f"{path}:1" in message and "['filepath2', 'answer']" in message
    assert "taskname,filepath1,filepath2,caption1,caption2,input,answer" in message
    assert _not_built(tmp_path / "data")


def test_unquoted_comma_and_empty_filepath_name_the_line(cld, tmp_path):
    fx, _, _, _ = cld
    csv_dir = _copy_csvs(fx, tmp_path)
    path = adiff.csv_path(csv_dir, "cld", "validation", 1)
    with open(path, "a", encoding="utf-8") as f:
        f.write("difference,a.wav,b.wav,x,y,explain,one, two\n")
    with pytest.raises(ValueError, match=f"{path}:11: the row has 8 fields but the header has 7"):
        _build(fx, tmp_path / "data", csv_dir=csv_dir)
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(adiff.COLUMNS) + '\ndifference,,b.wav,x,y,explain,"one, two"\n')
    with pytest.raises(ValueError, match=f"{path}:2: empty filepath1"):
        adiff.read_csv(path, 1)


def test_empty_answers_are_skipped_and_an_empty_csv_fails(cld, tmp_path):
    fx, _, _, _ = cld
    csv_dir = _copy_csvs(fx, tmp_path)
    path = adiff.csv_path(csv_dir, "cld", "eval", 1)
    row = fx.rows["eval"][1][2]
    _rewrite_answer(path, 2, "   ")
    rows, skipped = adiff.read_csv(path, 1)
    assert skipped == 1 and len(rows) == 8
    recs = {r["key"]: r for r in _records(_build(fx, tmp_path / "data", csv_dir=csv_dir), "eval")}
    assert recs[f"{row.filepath1}|{row.filepath2}"]["tiers"] == [2, 3]
    header = "taskname,filepath1,filepath2,caption1,caption2,input,answer\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(header + "difference,a.wav,b.wav,x,y,explain,\n")
    with pytest.raises(ValueError, match="has no usable row"):
        adiff.read_split(csv_dir, "cld", "eval")


def test_missing_split_is_left_out_and_train_is_required(cld, tmp_path):
    fx, _, _, _ = cld
    csv_dir = _copy_csvs(fx, tmp_path)
    for tier in (1, 2, 3):
        os.remove(adiff.csv_path(csv_dir, "cld", "validation", tier))
    os.remove(adiff.csv_path(csv_dir, "cld", "eval", 3))
    builder = _build(fx, tmp_path / "data", csv_dir=csv_dir)
    assert clip_store.pair_splits(builder) == ["train", "eval"]
    assert all(3 not in r["tiers"] for r in _records(builder, "eval"))
    for tier in (1, 2, 3):
        os.remove(adiff.csv_path(csv_dir, "cld", "train", tier))
    with pytest.raises(FileNotFoundError) as info:
        _build(fx, tmp_path / "data2", csv_dir=csv_dir)
    assert "data.csv_dir" in str(info.value)
    assert "cld_development_adiff_fewwords_answer.csv" in str(info.value)


def test_invalid_arguments_and_directories_fail_clearly(cld, tmp_path):
    fx, _, _, _ = cld
    with pytest.raises(ValueError, match="data.adiff_subset"):
        _build(fx, tmp_path, subset="clotho")
    with pytest.raises(ValueError, match="data.clip_seconds"):
        _build(fx, tmp_path, clip_seconds=0.0)
    with pytest.raises(ValueError, match="data.min_clip_fraction"):
        _build(fx, tmp_path, min_clip_fraction=1.5)
    with pytest.raises(FileNotFoundError, match="data.csv_dir"):
        _build(fx, tmp_path, csv_dir=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="data.audio_dir"):
        _build(fx, tmp_path, audio_dir=str(tmp_path / "nope"))


# -------------------------------------------------------------------------------- audio


def test_audio_candidates_are_short_and_in_the_documented_order(tmp_path):
    d = str(tmp_path)
    assert adiff.audio_candidates(d, "cld", "eval", "ClothoV21/evaluation/a, b.wav") == [
        os.path.join(d, "ClothoV21", "evaluation", "a, b.wav"),
        os.path.join(d, "evaluation", "a, b.wav"),
        os.path.join(d, "clotho_audio_files", "evaluation", "a, b.wav"),
        os.path.join(d, "a, b.wav"),
    ]
    assert adiff.audio_candidates(d, "acd", "validation", "AudioCapsLarger/val/Y1.wav") == [
        os.path.join(d, "AudioCapsLarger", "val", "Y1.wav"),
        os.path.join(d, "val", "Y1.wav"),  # the ACD split folder: listed once
        os.path.join(d, "Y1.wav"),
        # AudioCaps copies named by the bare YouTube id, without AudioSet's "Y".
        os.path.join(d, "AudioCapsLarger", "val", "1.wav"),
        os.path.join(d, "val", "1.wav"),
        os.path.join(d, "1.wav"),
    ]


@pytest.mark.parametrize("layout", ["without_first_folder", "clotho_audio_files", "flat"])
def test_common_download_layouts_are_found(cld, tmp_path, layout):
    fx, _, records, _ = cld
    audio_dir = tmp_path / "audio"
    for split, clips in fx.clips.items():
        folder = adiff.SPLIT_FILES["cld"][split]
        for fp, path in clips.items():
            name = os.path.basename(path)
            target = {
                "without_first_folder": audio_dir / folder / name,
                "clotho_audio_files": audio_dir / "clotho_audio_files" / folder / name,
                "flat": audio_dir / name,
            }[layout]
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path, target)
            assert adiff.resolve_audio(str(audio_dir), "cld", split, fp) == str(target)
    if layout == "flat":  # one whole build from the other layout gives the same records
        builder = _build(fx, tmp_path / "data", audio_dir=str(audio_dir))
        assert builder.builder_config.name == cld[1].builder_config.name  # audio_dir not in it
        for got, want in zip(_records(builder, "eval"), records["eval"], strict=True):
            assert got["key"] == want["key"]
            np.testing.assert_array_equal(got["audio1"], want["audio1"])


def test_missing_audio_names_the_row_the_filepath_and_the_paths_tried(cld, tmp_path, monkeypatch):
    fx, _, _, _ = cld
    audio_dir = str(tmp_path / "audio")
    shutil.copytree(fx.audio_dir, audio_dir)
    row = fx.rows["eval"][1][3]  # its filepath2 is first named here (pairs i -> i + 1)
    os.remove(os.path.join(audio_dir, *row.filepath2.split("/")))
    decoded = []
    monkeypatch.setattr(adiff, "load_audio", lambda *a, **k: decoded.append(a))
    with pytest.raises(FileNotFoundError) as info:
        _build(fx, tmp_path / "data", audio_dir=audio_dir)
    message = str(info.value)
    assert "1 audio file(s) not found" in message and "data.audio_dir" in message
    assert f"{fx.csv_path('eval', 1)}:{row.line}" in message and repr(row.filepath2) in message
    for candidate in adiff.audio_candidates(audio_dir, "cld", "eval", row.filepath2):
        assert candidate in message
    assert decoded == []  # every file is looked for before the train split is decoded
    assert _not_built(tmp_path / "data")


def test_unreadable_audio_names_the_csv_row(cld, tmp_path):
    fx, _, _, _ = cld
    audio_dir = str(tmp_path / "audio")
    shutil.copytree(fx.audio_dir, audio_dir)
    row = fx.rows["validation"][1][0]
    bad = os.path.join(audio_dir, *row.filepath1.split("/"))
    with open(bad, "wb") as f:
        f.write(np.random.default_rng(3).bytes(1000))
    with pytest.raises(AudioError) as info:
        _build(fx, tmp_path / "data", audio_dir=audio_dir)
    message = str(info.value)
    assert f"{fx.csv_path('validation', 1)}:{row.line}" in message and bad in message
    assert _not_built(tmp_path / "data")


def test_min_clip_fraction_fails_on_short_clips_before_decoding(cld, tmp_path, monkeypatch):
    fx, _, _, _ = cld
    decoded = []
    monkeypatch.setattr(adiff, "load_audio", lambda *a, **k: decoded.append(a))
    # CLD's nominal length is 15 s: 0.1 of it is 1.5 s, so the 1.0 and 1.4 s clips fail.
    with pytest.raises(AudioError) as info:
        _build(fx, tmp_path / "data", min_clip_fraction=0.1)
    message = str(info.value)
    assert "6 of 18 audio files are shorter than 1.5 s" in message
    first = fx.rows["train"][1][0]  # clip 0 (1.0 s) is first named by the train split's row 2
    assert f"train split, {first.filepath1!r} (first named by the row at " in message
    assert f"{fx.csv_path('train', 1)}:2)" in message
    assert decoded == [] and _not_built(tmp_path / "data")


# ------------------------------------------------------------------ fingerprint, statistics


def test_fingerprint_follows_the_csvs_and_settings_not_the_audio_dir(cld, tmp_path):
    fx, builder, _, _ = cld
    csv_dir = _copy_csvs(fx, tmp_path)
    plans = adiff.plan_splits(fx.csv_dir, fx.audio_dir, "cld", log=False)
    digest = source_files.digest(adiff.audio_sources(plans))
    named = adiff.fingerprint(csv_dir, "cld", CLIP_SECONDS, 16000, audio=digest)
    assert builder.builder_config.name == f"cld_fp{named}"
    base = adiff.fingerprint(csv_dir, "cld", CLIP_SECONDS, 16000)
    assert base != named
    assert adiff.fingerprint(csv_dir, "cld", CLIP_SECONDS, 16000) == base
    assert adiff.fingerprint(fx.csv_dir, "cld", CLIP_SECONDS, 16000) == base  # a copy: same
    changed = {
        adiff.fingerprint(csv_dir, "cld", 3.0, 16000),
        adiff.fingerprint(csv_dir, "cld", CLIP_SECONDS, 22050),
        adiff.fingerprint(csv_dir, "acd", CLIP_SECONDS, 16000),
    }
    row = fx.rows["eval"][2][0]
    _replace_in(adiff.csv_path(csv_dir, "cld", "eval", 2), row.answer, row.answer + "!")
    changed.add(adiff.fingerprint(csv_dir, "cld", CLIP_SECONDS, 16000))
    os.remove(adiff.csv_path(csv_dir, "cld", "eval", 2))
    changed.add(adiff.fingerprint(csv_dir, "cld", CLIP_SECONDS, 16000))
    assert len(changed) == 5 and base not in changed


def test_answer_length_statistics_per_split_and_tier(cld):
    fx, _, _, _ = cld
    stats = adiff.answer_statistics(fx.csv_dir, "cld")
    assert list(stats) == ["train", "validation", "eval"]
    for split, expected in fx.expected.items():
        words = collections.defaultdict(list)
        for answers in expected.values():
            for tier, answer in answers:
                words[tier].append(len(answer.split()))
        assert stats[split] == {
            t: {"answers": len(w), "median_words": statistics.median(w), "max_words": max(w)}
            for t, w in words.items()
        }
    assert stats["train"][1]["answers"] == 9 and stats["train"][2]["answers"] == 7
    table = adiff.format_answer_statistics(stats).splitlines()
    assert table[0] == "| split | tier | answers | median words | max words |"
    assert len(table) == 2 + 9
    s = stats["eval"][3]
    assert table[-1] == f"| eval | 3 (detail) | {s['answers']} | {s['median_words']:g} | " + (
        f"{s['max_words']} |"
    )


def test_stats_tool_reports_lengths_and_unknown_rates(tmp_path, capsys):
    """tools/adiff_stats.py on the fixture: every split and tier, train has no unknown tokens
    at min count 1, and the eval answers' "(eval pair N)" tags are unknown to a train vocabulary."""
    fixture = make_adiff_fixture(str(tmp_path / "adiff"), "cld")
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools", "adiff_stats.py")
    spec = importlib.util.spec_from_file_location("adiff_stats", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rows, _ = tool.split_statistics(fixture.csv_dir, "cld", min_count=1, max_tokens=320)
    by = {(r["split"], r["tier"]): r for r in rows}
    assert set(by) == {(s, t) for s in ("train", "validation", "eval") for t in (1, 2, 3)}
    assert all(r["unknown_rate"] == 0.0 for (s, _), r in by.items() if s == "train")
    assert all(r["unknown_rate"] > 0.0 for (s, _), r in by.items() if s == "eval")
    expected = fixture.expected["train"]
    tier3 = [a for refs in expected.values() for t, a in refs if t == 3]
    assert by[("train", 3)]["max_words"] == max(len(a.split()) for a in tier3)
    limit = by[("train", 2)]["max_tokens"]  # every tier 2 answer fits; no tier 3 one does
    short, _ = tool.split_statistics(fixture.csv_dir, "cld", min_count=1, max_tokens=limit)
    cut = {(r["split"], r["tier"]): r["cut"] for r in short}
    assert cut[("train", 2)] == 0.0 and cut[("train", 3)] == 1.0
    assert tool.main([f"--csv_dir={fixture.csv_dir}", "--subset=cld"]) == 0
    assert "| eval | 3 |" in capsys.readouterr().out
    assert tool.main([f"--csv_dir={tmp_path}", "--subset=cld"]) == 1


def test_a_replaced_audio_file_is_never_served_from_the_old_build(tmp_path, caplog):
    """Replacing a file (as the truncation warning advises) builds anew from the current files,
    and the log names the changed file and the old build to delete; moving the audio folder
    (same files) rebuilds nothing."""
    fx = make_adiff_fixture(str(tmp_path / "fx"), num_clips=3, num_pairs=3)
    first = _build(fx, tmp_path / "data")
    moved = str(tmp_path / "moved_audio")
    shutil.copytree(fx.audio_dir, moved)  # copy2: sizes and modification times kept
    assert _build(fx, tmp_path / "data", audio_dir=moved).builder_config.name == (
        first.builder_config.name
    )
    assert os.path.isfile(os.path.join(first.data_dir, source_files.MANIFEST))
    key = _records(first, "eval")[0]["key"]
    filepath = key.split("|")[0]
    path = fx.clips["eval"][filepath]
    data, rate = sf.read(path)
    sf.write(path, 0.5 * data, rate, subtype="PCM_16")  # the same size, other samples
    with caplog.at_level(logging.WARNING):
        second = _build(fx, tmp_path / "data")
    assert second.builder_config.name != first.builder_config.name
    old = {r["key"]: r for r in _records(first, "eval")}
    new = {r["key"]: r for r in _records(second, "eval")}
    assert not np.array_equal(new[key]["audio1"], old[key]["audio1"])
    message = caplog.text
    assert "1 source file(s) changed since the build in" in message
    assert f"audio_dir:{filepath} (modified)" in message
    assert f"delete {os.path.dirname(first.data_dir)}" in message
    # The old build stays where it was (adc_jax never deletes a build).
    assert os.path.isfile(os.path.join(first.data_dir, "dataset_info.json"))


def test_pairs_name_their_clips_and_training_reads_the_same_audio(cld):
    """Pairs sharing a clip point at one stored copy; the training view (parsed from the
    serialised pairs) gives what the decoded, joined records give."""
    _, builder, records, _ = cld
    for split, recs in records.items():
        by_clip = collections.defaultdict(set)
        for r in recs:
            for fp, clip in zip(r["key"].split("|"), r["clips"], strict=True):
                by_clip[fp].add(clip)
        assert all(len(c) == 1 for c in by_clip.values())  # one position per file
        assert len({c for cs in by_clip.values() for c in cs}) == len(by_clip)
        source = clip_store.pair_source(builder, split)
        train = source.train_records()
        assert len(train) == len(source) == len(recs)
        for i, r in enumerate(recs):
            t = train[i]
            assert features.as_text(t["key"]) == r["key"]
            assert [features.as_text(c) for c in t["captions"]] == r["captions"]
            assert t["caption_tiers"].tolist() == r["tiers"]
            np.testing.assert_array_equal(t["audio1"], r["audio1"])
            np.testing.assert_array_equal(t["audio2"], r["audio2"])
        with pytest.raises(IndexError):
            source[len(recs)]
