"""Build the FP32 ONNX graph of an EfficientNet-Lite variant from a canonical state dict.

Batch norm is folded into the preceding convolution (``w' = w * gamma / sqrt(var + eps)``,
``b' = beta - mean * gamma / sqrt(var + eps)``). TensorFlow "same" padding is
written as explicit, possibly asymmetric ``pads`` on each Conv. Static pads are
exact because only the batch dimension is dynamic and the resolution is fixed.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import preprocessing
from .architecture import (
    BATCH_NORM_EPSILON,
    NUM_CLASSES,
    Variant,
    blocks,
    check_state_dict,
    conv_output_size,
    same_padding,
)

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
PRODUCER_NAME = "effnet_modelbuild"


def fold_batch_norm(
    weight: np.ndarray, state_dict: dict[str, np.ndarray], prefix: str
) -> tuple[np.ndarray, np.ndarray]:
    """Return the (weight, bias) of a bias-free convolution followed by the batch norm at ``prefix``."""
    gamma = state_dict[f"{prefix}.weight"].astype(np.float64)
    beta = state_dict[f"{prefix}.bias"].astype(np.float64)
    mean = state_dict[f"{prefix}.running_mean"].astype(np.float64)
    var = state_dict[f"{prefix}.running_var"].astype(np.float64)
    scale = gamma / np.sqrt(var + BATCH_NORM_EPSILON)
    folded_weight = weight.astype(np.float64) * scale[:, None, None, None]
    folded_bias = beta - mean * scale
    return folded_weight.astype(np.float32), folded_bias.astype(np.float32)


class _GraphBuilder:
    """Accumulates nodes and initializers while tracking the spatial size of the current tensor."""

    def __init__(self, state_dict: dict[str, np.ndarray], size: int) -> None:
        self.state_dict = state_dict
        self.size = size
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.initializers.append(numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min"))
        self.initializers.append(numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max"))

    def add_initializer(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def conv_bn(
        self, x: str, name: str, weight_key: str, bn_prefix: str, stride: int, groups: int, relu6: bool
    ) -> str:
        """Add a Conv with folded batch norm and, if requested, a ReLU6 (Clip 0..6)."""
        weight, bias = fold_batch_norm(self.state_dict[weight_key], self.state_dict, bn_prefix)
        kernel = weight.shape[2]
        top, bottom = same_padding(self.size, kernel, stride)
        left, right = same_padding(self.size, kernel, stride)
        output = f"{name}/conv"
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.add_initializer(f"{name}.weight", weight), self.add_initializer(f"{name}.bias", bias)],
                [output],
                name=output,
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[top, left, bottom, right],
                group=groups,
            )
        )
        self.size = conv_output_size(self.size, stride)
        if not relu6:
            return output
        activated = f"{name}/relu6"
        self.nodes.append(helper.make_node("Clip", [output, "relu6_min", "relu6_max"], [activated], name=activated))
        return activated


def build_graph(variant: Variant, state_dict: dict[str, np.ndarray]) -> onnx.GraphProto:
    check_state_dict(variant, state_dict)
    builder = _GraphBuilder(state_dict, variant.resolution)

    x = builder.conv_bn(INPUT_NAME, "stem", "_conv_stem.weight", "_bn0", 2, 1, relu6=True)

    for block in blocks(variant):
        name = f"blocks.{block.index}"
        inputs = x
        if block.expand_channels is not None:
            x = builder.conv_bn(
                x, f"{name}.expand", f"{block.prefix}._expand_conv.weight", f"{block.prefix}._bn0", 1, 1, relu6=True
            )
        x = builder.conv_bn(
            x,
            f"{name}.depthwise",
            f"{block.prefix}._depthwise_conv.weight",
            f"{block.prefix}._bn1",
            block.stride,
            block.hidden_channels,
            relu6=True,
        )
        x = builder.conv_bn(
            x, f"{name}.project", f"{block.prefix}._project_conv.weight", f"{block.prefix}._bn2", 1, 1, relu6=False
        )
        if block.has_skip:
            output = f"{name}/add"
            builder.nodes.append(helper.make_node("Add", [x, inputs], [output], name=output))
            x = output

    x = builder.conv_bn(x, "head", "_conv_head.weight", "_bn1", 1, 1, relu6=True)

    builder.nodes.append(helper.make_node("GlobalAveragePool", [x], ["head/pool"], name="head/pool"))
    builder.nodes.append(helper.make_node("Flatten", ["head/pool"], ["head/flatten"], name="head/flatten", axis=1))
    fc_weight = builder.add_initializer("fc.weight", state_dict["_fc.weight"].astype(np.float32))
    fc_bias = builder.add_initializer("fc.bias", state_dict["_fc.bias"].astype(np.float32))
    builder.nodes.append(
        helper.make_node("Gemm", ["head/flatten", fc_weight, fc_bias], [OUTPUT_NAME], name="fc", transB=1)
    )

    resolution = variant.resolution
    graph_input = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, resolution, resolution])
    graph_output = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", NUM_CLASSES])
    return helper.make_graph(
        builder.nodes, f"efficientnet-{variant.name}", [graph_input], [graph_output], builder.initializers
    )


def build_model(variant: Variant, state_dict: dict[str, np.ndarray], weights_sha256: str) -> onnx.ModelProto:
    """Build and check the FP32 model, with its metadata properties set."""
    model = helper.make_model(
        build_graph(variant, state_dict),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER_NAME,
        doc_string=f"EfficientNet-Lite {variant.name}, batch norm folded; input {INPUT_NAME}, output {OUTPUT_NAME}",
    )
    helper.set_model_props(
        model,
        {
            "variant": variant.name,
            "resolution": str(variant.resolution),
            "normalization": normalization_property(),
            "weights_sha256": weights_sha256,
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def normalization_property() -> str:
    """Return the ``normalization`` metadata value: the per-channel mean and std as JSON."""
    return json.dumps({"mean": list(preprocessing.MEAN), "std": list(preprocessing.STD)})
