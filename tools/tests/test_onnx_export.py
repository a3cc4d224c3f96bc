import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import pypi_state_dict

from effnet_modelbuild import onnx_export, reference
from effnet_modelbuild.architecture import VARIANTS, expected_shapes


@pytest.fixture(scope="module")
def lite0_model():
    return onnx_export.build_model(VARIANTS["lite0"], pypi_state_dict("lite0"), "0" * 64)


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_lite0_matches_numpy_reference(lite0_model):
    rng = np.random.default_rng(7)
    images = rng.uniform(-1.0, 1.0, size=(2, 3, 224, 224)).astype(np.float32)

    logits = _session(lite0_model).run(None, {"input": images})[0]
    expected = reference.forward(VARIANTS["lite0"], pypi_state_dict("lite0"), images)

    assert logits.shape == (2, 1000)
    tolerance = 1e-4 * np.abs(expected).max()
    assert np.abs(logits - expected).max() <= tolerance


def test_lite0_batch_dimension_dynamic(lite0_model):
    rng = np.random.default_rng(3)
    images = rng.uniform(-1.0, 1.0, size=(3, 3, 224, 224)).astype(np.float32)
    session = _session(lite0_model)

    batched = session.run(None, {"input": images})[0]
    single = session.run(None, {"input": images[1:2]})[0]

    assert batched.shape == (3, 1000)
    np.testing.assert_allclose(single[0], batched[1], rtol=1e-4, atol=1e-4)


def test_lite0_graph_interface(lite0_model):
    graph = lite0_model.graph
    input_dims = graph.input[0].type.tensor_type.shape.dim
    output_dims = graph.output[0].type.tensor_type.shape.dim

    assert graph.input[0].name == "input"
    assert input_dims[0].dim_param == "N"
    assert [d.dim_value for d in input_dims[1:]] == [3, 224, 224]
    assert graph.output[0].name == "logits"
    assert output_dims[1].dim_value == 1000
    assert lite0_model.opset_import[0].version >= 17
    assert not any(node.op_type == "BatchNormalization" for node in graph.node)


def test_lite0_metadata(lite0_model):
    properties = {prop.key: prop.value for prop in lite0_model.metadata_props}
    assert properties["variant"] == "lite0"
    assert properties["resolution"] == "224"
    assert json.loads(properties["normalization"]) == {"mean": [127.0] * 3, "std": [128.0] * 3}
    assert properties["weights_sha256"] == "0" * 64


@pytest.mark.parametrize("name", ["lite3", "lite4"])
def test_random_weights_graph_checks(name):
    # Random weights only exercise the graph structure of variants without pretrained weights.
    rng = np.random.default_rng(0)
    state_dict = {}
    for key, shape in expected_shapes(VARIANTS[name]).items():
        values = rng.standard_normal(shape).astype(np.float32) * 0.01
        state_dict[key] = np.abs(values) + 1.0 if key.endswith("running_var") else values
    model = onnx_export.build_model(VARIANTS[name], state_dict, "0" * 64)
    onnx.checker.check_model(model, full_check=True)
    resolution = VARIANTS[name].resolution
    logits = _session(model).run(None, {"input": np.zeros((1, 3, resolution, resolution), np.float32)})[0]
    assert logits.shape == (1, 1000)
