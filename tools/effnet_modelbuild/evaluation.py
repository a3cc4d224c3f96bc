"""Offline top-1/top-5 evaluation of the models of a repository with onnxruntime.

Each evaluated model gets an entry in its manifest's ``evaluation`` list
(replacing an earlier entry for the same dataset) and a ``predictions.json``
next to the manifest::

    {"dataset": "imagenet-sample", "predictions": {"<file name>": [top-5 class indices, best first]}}

Top-5 indices are ordered by descending logit, ties broken by lower index.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .dataset import LabelledImages
from .manifest import MANIFEST_FILE, model_name, read_manifest, write_manifest
from .onnx_export import INPUT_NAME

PREDICTIONS_FILE = "predictions.json"
EVALUATION_BATCH = 32


@dataclass(frozen=True)
class EvaluationResult:
    model: str
    images: int
    top1: float
    top5: float
    agreement_with_fp32: float | None
    seconds: float


def top5_predictions(model_path: Path, inputs: np.ndarray) -> np.ndarray:
    """Run a model over ``inputs`` [N, 3, R, R] in batches; returns the top-5 class indices [N, 5]."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    batches = []
    for start in range(0, len(inputs), EVALUATION_BATCH):
        logits = session.run(None, {INPUT_NAME: inputs[start : start + EVALUATION_BATCH]})[0]
        batches.append(np.argsort(-logits, axis=1, kind="stable")[:, :5])
    return np.concatenate(batches)


def read_predictions(model_dir: Path, dataset: LabelledImages) -> np.ndarray | None:
    """Return the stored top-5 predictions of a model for ``dataset``, or None when absent or stale."""
    path = model_dir / PREDICTIONS_FILE
    if not path.is_file():
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    predictions = stored.get("predictions", {})
    if stored.get("dataset") != dataset.name or set(predictions) != set(dataset.files):
        return None
    return np.asarray([predictions[file] for file in dataset.files], dtype=np.int64)


def _write_predictions(model_dir: Path, dataset: LabelledImages, top5: np.ndarray) -> None:
    document = {
        "dataset": dataset.name,
        "predictions": {file: [int(index) for index in row] for file, row in zip(dataset.files, top5)},
    }
    (model_dir / PREDICTIONS_FILE).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def evaluate_model(model_dir: Path, dataset: LabelledImages) -> EvaluationResult:
    """Evaluate one available model, then update its manifest and ``predictions.json``.

    INT8 models are compared with the FP32 model of the same variant, whose
    predictions are read from its ``predictions.json`` or computed first.
    """
    started = time.monotonic()
    manifest = read_manifest(model_dir)
    if manifest["state"] != "available":
        raise ValueError(f"model {manifest['name']} is unavailable: {manifest['unavailable_reason']}")

    inputs = dataset.tensor(manifest["input"]["resolution"])
    top5 = top5_predictions(model_dir / manifest["file"], inputs)
    top1_accuracy = float(np.mean(top5[:, 0] == dataset.labels))
    top5_accuracy = float(np.mean(np.any(top5 == dataset.labels[:, None], axis=1)))

    agreement = None
    if manifest["precision"] == "int8":
        fp32_dir = model_dir.parent / model_name(manifest["variant"], "fp32")
        fp32_top5 = read_predictions(fp32_dir, dataset)
        if fp32_top5 is None and _is_available(fp32_dir):
            evaluate_model(fp32_dir, dataset)
            fp32_top5 = read_predictions(fp32_dir, dataset)
        if fp32_top5 is not None:
            agreement = float(np.mean(top5[:, 0] == fp32_top5[:, 0]))

    entry = {
        "dataset": dataset.name,
        "images": len(dataset.files),
        "top1": top1_accuracy,
        "top5": top5_accuracy,
        "agreement_with_fp32": agreement,
    }
    manifest["evaluation"] = [e for e in manifest.get("evaluation", []) if e.get("dataset") != dataset.name]
    manifest["evaluation"].append(entry)
    write_manifest(model_dir, manifest)
    _write_predictions(model_dir, dataset, top5)

    return EvaluationResult(
        manifest["name"], len(dataset.files), top1_accuracy, top5_accuracy, agreement, time.monotonic() - started
    )


def _is_available(model_dir: Path) -> bool:
    return (model_dir / MANIFEST_FILE).is_file() and read_manifest(model_dir).get("state") == "available"


def available_models(repository: Path) -> list[Path]:
    """List the directories of available models, FP32 before INT8 so agreement can reuse FP32 predictions."""
    found = []
    for manifest_path in repository.glob(f"*/{MANIFEST_FILE}"):
        manifest = read_manifest(manifest_path.parent)
        if manifest.get("state") == "available":
            found.append(((manifest["variant"], manifest["precision"]), manifest_path.parent))
    return [model_dir for _, model_dir in sorted(found)]
