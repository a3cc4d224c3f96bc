"""The ``manifest.json`` of each model directory, with the fields of ``docs/model-repository.md``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import preprocessing
from .architecture import NUM_CLASSES, Variant, multiply_adds, parameter_count
from .onnx_export import INPUT_NAME, OUTPUT_NAME

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
LABELS_FILE = "labels.tsv"
PRECISIONS = ("fp32", "int8")


def model_name(variant: str, precision: str) -> str:
    return f"efficientnet-{variant}-{precision}"


def make_manifest(
    variant: Variant,
    precision: str,
    *,
    sha256: str | None,
    weights_source: str | None,
    weights_sha256: str | None,
    quantization: dict | None = None,
    unavailable_reason: str | None = None,
) -> dict:
    """Return a manifest; the model is available exactly when ``unavailable_reason`` is None."""
    if precision not in PRECISIONS:
        raise ValueError(f"invalid precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    available = unavailable_reason is None
    return {
        "name": model_name(variant.name, precision),
        "variant": variant.name,
        "precision": precision,
        "state": "available" if available else "unavailable",
        "unavailable_reason": unavailable_reason,
        "file": MODEL_FILE if available else None,
        "sha256": sha256 if available else None,
        "input": {"name": INPUT_NAME, "resolution": variant.resolution, "layout": "NCHW"},
        "preprocessing": {
            "crop_padding": preprocessing.CROP_PADDING,
            "resize": preprocessing.RESIZE,
            "mean": list(preprocessing.MEAN),
            "std": list(preprocessing.STD),
        },
        "output": {"name": OUTPUT_NAME, "classes": NUM_CLASSES},
        "labels": LABELS_FILE,
        "parameters": parameter_count(variant),
        "multiply_adds": multiply_adds(variant),
        "weights": {"source": weights_source, "sha256": weights_sha256},
        "quantization": quantization,
        "evaluation": [],
    }


def read_manifest(model_dir: Path) -> dict:
    with (model_dir / MANIFEST_FILE).open(encoding="utf-8") as handle:
        return json.load(handle)


def write_manifest(model_dir: Path, manifest: dict) -> None:
    """Write ``manifest.json`` atomically (temporary file, then rename)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    temporary = model_dir / f".{MANIFEST_FILE}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, model_dir / MANIFEST_FILE)
