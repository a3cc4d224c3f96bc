"""Plain numpy forward pass of EfficientNet-Lite, with batch norm applied as-is.

This is the check on the ONNX export: it reads the canonical state dict
directly, keeps batch norm as a separate step instead of folding it into the
convolutions, and pads explicitly with :func:`architecture.same_padding`.
It computes in float64 and is meant for a few images, not for throughput.
"""

from __future__ import annotations

import numpy as np

from .architecture import BATCH_NORM_EPSILON, Variant, blocks, same_padding


def _pad_same(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    top, bottom = same_padding(x.shape[2], kernel, stride)
    left, right = same_padding(x.shape[3], kernel, stride)
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def _windows(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    padded = _pad_same(x, kernel, stride)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(2, 3))
    return windows[:, :, ::stride, ::stride]


def conv2d(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """Dense convolution with "same" padding; ``weight`` is OIHW."""
    kernel = weight.shape[2]
    if kernel == 1 and stride == 1:
        return np.einsum("nchw,oc->nohw", x, weight[:, :, 0, 0], optimize=True)
    return np.einsum("nchwij,ocij->nohw", _windows(x, kernel, stride), weight, optimize=True)


def depthwise_conv2d(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """Depthwise convolution with "same" padding; ``weight`` is [C, 1, k, k]."""
    kernel = weight.shape[2]
    return np.einsum("nchwij,cij->nchw", _windows(x, kernel, stride), weight[:, 0], optimize=True)


def batch_norm(x: np.ndarray, state_dict: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    def channel(name: str) -> np.ndarray:
        return state_dict[f"{prefix}.{name}"].astype(np.float64)[None, :, None, None]

    normalized = (x - channel("running_mean")) / np.sqrt(channel("running_var") + BATCH_NORM_EPSILON)
    return normalized * channel("weight") + channel("bias")


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def forward(variant: Variant, state_dict: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """Compute logits [N, 1000] for preprocessed images [N, 3, R, R]."""
    weights = {key: value.astype(np.float64) for key, value in state_dict.items()}
    x = images.astype(np.float64)

    x = relu6(batch_norm(conv2d(x, weights["_conv_stem.weight"], 2), weights, "_bn0"))

    for block in blocks(variant):
        inputs = x
        if block.expand_channels is not None:
            x = conv2d(x, weights[f"{block.prefix}._expand_conv.weight"], 1)
            x = relu6(batch_norm(x, weights, f"{block.prefix}._bn0"))
        x = depthwise_conv2d(x, weights[f"{block.prefix}._depthwise_conv.weight"], block.stride)
        x = relu6(batch_norm(x, weights, f"{block.prefix}._bn1"))
        x = conv2d(x, weights[f"{block.prefix}._project_conv.weight"], 1)
        x = batch_norm(x, weights, f"{block.prefix}._bn2")
        if block.has_skip:
            x = x + inputs

    x = relu6(batch_norm(conv2d(x, weights["_conv_head.weight"], 1), weights, "_bn1"))
    pooled = x.mean(axis=(2, 3))
    return pooled @ weights["_fc.weight"].T + weights["_fc.bias"]
