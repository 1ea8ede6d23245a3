"""Tests of the torch-free BYOL-A checkpoint reader and converter (`adc_jax.models.byola_weights`)
and of its output as `config.model.byola_init`."""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from byola_fixture import CHANNELS, DIM, N_MELS, REPO, fixture_tool, write_checkpoint
from flax import nnx

from adc_jax.models import byola, byola_weights


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(path of a random official-format .pth, its state dict, converted dir)."""
    return write_checkpoint(tmp_path_factory.mktemp("byola"))


def small_model(seed: int = 0) -> byola.AudioNTT2020:
    return byola.AudioNTT2020(n_mels=N_MELS, channels=CHANNELS, dim=DIM, rngs=nnx.Rngs(seed))


def test_reader_round_trips_the_fixture(checkpoint):
    pth, sd, _ = checkpoint
    read = byola_weights.read_torch_state_dict(str(pth))
    assert list(read) == list(sd)
    for key, value in sd.items():
        assert read[key].shape == value.shape and read[key].dtype == value.dtype, key
        np.testing.assert_array_equal(read[key], value)
    assert read["features.1.num_batches_tracked"].shape == ()


def test_convert_and_load_round_trip(checkpoint):
    pth, sd, out_dir = checkpoint
    meta = json.loads((out_dir / "meta.json").read_text())
    assert (meta["dim"], meta["channels"], meta["n_mels"]) == (DIM, CHANNELS, N_MELS)
    assert len(meta["source_sha256"]) == 64 and "fc.0.weight" in meta["source_keys"]
    model = small_model(seed=7)
    byola.load_pretrained(model, str(out_dir))
    expected = {
        "conv1/kernel": sd["features.0.weight"].transpose(3, 2, 1, 0),
        "conv3/bias": sd["features.8.bias"],
        "bn2/scale": sd["features.5.weight"],
        "bn2/bias": sd["features.5.bias"],
        "bn2/mean": sd["features.5.running_mean"],
        "bn3/var": sd["features.9.running_var"],
        "fc1/kernel": sd["fc.0.weight"].T,
        "fc2/kernel": sd["fc.3.weight"].T,
        "fc2/bias": sd["fc.3.bias"],
    }
    for name, value in expected.items():
        module_name, attr = name.split("/")
        np.testing.assert_array_equal(getattr(getattr(model, module_name), attr)[...], value)


def test_prefixed_state_dict_converts_the_same(checkpoint):
    _, sd, out_dir = checkpoint
    plain = byola_weights.convert_state_dict(sd)
    for prefix in ("module.", "state_dict.module."):
        prefixed = {prefix + k: v for k, v in sd.items()}
        converted = byola_weights.convert_state_dict(prefixed)
        assert converted.keys() == plain.keys()
        for k in plain:
            np.testing.assert_array_equal(converted[k], plain[k])
    with pytest.raises(ValueError, match="several BYOL-A encoders"):
        byola_weights.convert_state_dict({**{"a." + k: v for k, v in sd.items()}, **sd})
    with pytest.raises(ValueError, match="does not use"):
        byola_weights.convert_state_dict({**sd, "fc.6.weight": np.zeros(3)})


def test_converter_cli(checkpoint, tmp_path):
    pth, _, out_dir = checkpoint
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "convert_byola.py"), "--input", str(pth),
         "--output", str(tmp_path / "cli")],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"byola_dim={DIM}" in result.stdout
    with np.load(tmp_path / "cli" / "params.npz") as a, np.load(out_dir / "params.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_checkpoint",))


def test_restricted_unpickler_refuses_code_execution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps({"x": _Evil()}, protocol=2))
        zf.writestr("evil/version", "3\n")
    with pytest.raises(byola_weights.UnsafeCheckpointError, match=r"system"):
        byola_weights.read_torch_state_dict(str(path))
    assert not (tmp_path / "pwned_by_checkpoint").exists()
    # The same for a builtins.eval reduce at the top level.
    payload = pickle.dumps(_EvalPayload(), protocol=4)
    with (
        zipfile.ZipFile(path) as archive,
        pytest.raises(byola_weights.UnsafeCheckpointError, match="eval"),
    ):
        byola_weights.unpickle_torch(payload, archive)


class _EvalPayload:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_non_zip_checkpoint_fails_clearly(tmp_path):
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="legacy format"):
        byola_weights.read_torch_state_dict(str(legacy))
    with pytest.raises(FileNotFoundError):
        byola_weights.read_torch_state_dict(str(tmp_path / "missing.pth"))


def test_fixture_pickle_uses_torch_opcodes(checkpoint):
    """Globals in the fixture are exactly the ones torch.save writes for a state dict."""
    pth, _, _ = checkpoint
    with zipfile.ZipFile(pth) as zf:
        names = zf.namelist()
        data = zf.read(names[0])
    assert names[0] == "AudioNTT2020-test/data.pkl"
    globals_ = {arg for op, arg, _ in pickletools.genops(io.BytesIO(data)) if op.name == "GLOBAL"}
    assert globals_ == {
        "collections OrderedDict",
        "torch._utils _rebuild_tensor_v2",
        "torch FloatStorage",
        "torch LongStorage",
    }


def test_main_refuses_weights_of_another_shape_before_building_data(tmp_path):
    """Official d=512 weights into the :smoke model: exit status 2 with one message naming every
    mismatching field and the flags to set, before the dataset or the workdir is written."""
    pth = tmp_path / "AudioNTT2020-BYOLA-64x96d512.pth"
    sd = fixture_tool.random_state_dict(dim=512, channels=64, n_mels=64, seed=1)
    fixture_tool.save_torch_state_dict(str(pth), sd)
    converted = tmp_path / "byola_d512"
    byola_weights.convert_checkpoint(str(pth), str(converted))
    data_dir, workdir = tmp_path / "data", tmp_path / "run"
    data_dir.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "adc_jax.main",
            f"--config={REPO / 'configs' / 'late_sdd.py'}:smoke",
            f"--workdir={workdir}",
            f"--config.model.byola_init={converted}",
        ],
        cwd=REPO,
        env={**os.environ, "ADC_JAX_DATA_DIR": str(data_dir), "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    meta = converted / "meta.json"
    # The :smoke model has byola_channels=8, byola_dim=32 and n_mels=64 (which matches).
    for field, file_value, config_value in (("byola_channels", 64, 8), ("byola_dim", 512, 32)):
        assert f"model.{field} is {file_value} in {meta} but {config_value} in the config" in (
            result.stderr
        )
        assert f"--config.model.{field}={file_value}" in result.stderr
    assert "model.n_mels is" not in result.stderr
    assert "Traceback" not in result.stderr
    assert list(data_dir.iterdir()) == [] and not workdir.exists()
