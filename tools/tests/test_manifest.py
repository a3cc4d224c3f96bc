import json
import re
from pathlib import Path

import onnx
import pytest
from conftest import ROOT_DIR

from effnet_modelbuild.architecture import VARIANTS, multiply_adds, parameter_count
from effnet_modelbuild.build import write_unavailable
from effnet_modelbuild.evaluation import PREDICTIONS_FILE
from effnet_modelbuild.manifest import read_manifest

DOC = ROOT_DIR / "docs" / "model-repository.md"
MODEL_NAMES = [f"efficientnet-{v}-{p}" for v in VARIANTS for p in ("fp32", "int8")]


def documented_fields() -> list[str]:
    """Read the dotted field names from the manifest table of docs/model-repository.md."""
    fields = re.findall(r"^\| `([a-z0-9_.]+)` \|", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert len(fields) > 15, f"manifest table not found in {DOC}"
    return fields


def has_field(manifest: dict, dotted: str) -> bool:
    value = manifest
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True


@pytest.mark.parametrize("name", ["lite3", "lite4"])
def test_unavailable_without_weights(tmp_path, name):
    dirs = write_unavailable(tmp_path, name)
    assert [d.name for d in dirs] == [f"efficientnet-{name}-fp32", f"efficientnet-{name}-int8"]
    for model_dir in dirs:
        manifest = read_manifest(model_dir)
        assert manifest["state"] == "unavailable"
        assert manifest["unavailable_reason"] == "no pretrained weights supplied"
        assert manifest["file"] is None
        assert manifest["input"]["resolution"] == VARIANTS[name].resolution
        assert manifest["parameters"] == parameter_count(VARIANTS[name])
        assert manifest["multiply_adds"] == multiply_adds(VARIANTS[name])
        assert not (model_dir / "model.onnx").exists()
        for field in documented_fields():
            assert has_field(manifest, field), field


def test_repository_has_every_model(model_repository):
    assert (model_repository / "labels.tsv").is_file()
    for name in MODEL_NAMES:
        assert (model_repository / name / "manifest.json").is_file(), name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_repository_manifest_fields(model_repository, name):
    manifest = read_manifest(model_repository / name)
    for field in documented_fields():
        assert has_field(manifest, field), field
    assert manifest["name"] == name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_repository_available_models(model_repository, name):
    model_dir = model_repository / name
    manifest = read_manifest(model_dir)
    if manifest["state"] != "available":
        pytest.skip(f"{name} is unavailable: {manifest['unavailable_reason']}")

    model = onnx.load(str(model_dir / manifest["file"]), load_external_data=False)
    properties = {prop.key: prop.value for prop in model.metadata_props}
    assert properties["variant"] == manifest["variant"]
    assert properties["weights_sha256"] == manifest["weights"]["sha256"]
    assert manifest["evaluation"], "no evaluation stored"
    evaluation = manifest["evaluation"][0]
    assert 0.0 <= evaluation["top1"] <= evaluation["top5"] <= 1.0
    if manifest["precision"] == "int8":
        assert manifest["quantization"]["activations"] == "uint8"
        assert evaluation["agreement_with_fp32"] is not None

    predictions = json.loads((model_dir / PREDICTIONS_FILE).read_text())
    assert predictions["dataset"] == evaluation["dataset"]
    assert len(predictions["predictions"]) == evaluation["images"]
    assert all(len(top5) == 5 for top5 in predictions["predictions"].values())
