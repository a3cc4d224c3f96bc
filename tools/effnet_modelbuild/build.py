"""Build model directories (FP32 and INT8 ONNX plus manifests) and whole repositories."""

from __future__ import annotations

import csv
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import onnx

from . import onnx_export
from .architecture import VARIANTS, get_variant
from .dataset import LabelledImages
from .evaluation import evaluate_model
from .manifest import LABELS_FILE, MODEL_FILE, PRECISIONS, make_manifest, model_name, write_manifest
from .quantization import quantize_model
from .tf_checkpoint import load_tf_checkpoint
from .weights import find_pypi_weights, load_pytorch_state_dict, sha256_file

log = logging.getLogger(__name__)

NO_WEIGHTS_REASON = "no pretrained weights supplied"
CLASSES_HEADER = ["index", "wnid", "name"]


def build_variant(
    output: Path,
    variant_name: str,
    state_dict: dict[str, np.ndarray],
    weights_source: str,
    weights_sha256: str,
    calibration: LabelledImages,
) -> list[Path]:
    """Write the FP32 and INT8 model directories of one variant; returns them (FP32 first).

    ``state_dict`` uses the canonical keys of :mod:`effnet_modelbuild.architecture`,
    whatever checkpoint it was converted from; ``weights_source`` and
    ``weights_sha256`` describe that checkpoint for the manifests. INT8
    calibration uses every image of ``calibration``.
    """
    variant = get_variant(variant_name)

    started = time.monotonic()
    fp32_dir = output / model_name(variant.name, "fp32")
    fp32_dir.mkdir(parents=True, exist_ok=True)
    fp32_path = fp32_dir / MODEL_FILE
    onnx.save(onnx_export.build_model(variant, state_dict, weights_sha256), str(fp32_path))
    write_manifest(
        fp32_dir,
        make_manifest(
            variant, "fp32", sha256=sha256_file(fp32_path), weights_source=weights_source, weights_sha256=weights_sha256
        ),
    )
    log.info("%s: exported in %.1f s", fp32_dir.name, time.monotonic() - started)

    started = time.monotonic()
    images = calibration.tensor(variant.resolution)
    int8_dir = output / model_name(variant.name, "int8")
    int8_dir.mkdir(parents=True, exist_ok=True)
    int8_path = int8_dir / MODEL_FILE
    quantization = quantize_model(fp32_path, int8_path, images)
    write_manifest(
        int8_dir,
        make_manifest(
            variant,
            "int8",
            sha256=sha256_file(int8_path),
            weights_source=weights_source,
            weights_sha256=weights_sha256,
            quantization=quantization,
        ),
    )
    log.info("%s: quantized with %d calibration images in %.1f s", int8_dir.name, len(images), time.monotonic() - started)
    return [fp32_dir, int8_dir]


def write_unavailable(output: Path, variant_name: str, reason: str = NO_WEIGHTS_REASON) -> list[Path]:
    """Write manifests that mark both precisions of a variant unavailable, without ONNX files."""
    variant = get_variant(variant_name)
    dirs = []
    for precision in PRECISIONS:
        model_dir = output / model_name(variant.name, precision)
        write_manifest(
            model_dir,
            make_manifest(
                variant, precision, sha256=None, weights_source=None, weights_sha256=None, unavailable_reason=reason
            ),
        )
        dirs.append(model_dir)
    return dirs


def copy_labels(classes_path: Path, output: Path) -> None:
    """Copy ``classes.tsv`` (header ``index  wnid  name``, 1000 rows) to the repository's labels file."""
    with classes_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    if not rows or rows[0] != CLASSES_HEADER:
        raise ValueError(f"{classes_path} must start with the header {' '.join(CLASSES_HEADER)}")
    if len(rows) - 1 != 1000:
        raise ValueError(f"{classes_path} has {len(rows) - 1} classes, expected 1000")
    shutil.copyfile(classes_path, output / LABELS_FILE)


def build_repository(
    output: Path,
    dataset: LabelledImages,
    variants: list[str] | None = None,
    tf_checkpoints: dict[str, Path] | None = None,
) -> None:
    """Build every requested variant into ``output``, then evaluate each built model on ``dataset``.

    A variant listed in ``tf_checkpoints`` takes its weights from that
    TensorFlow checkpoint (see :mod:`effnet_modelbuild.tf_checkpoint`), the
    others from the installed PyPI packages. Variants with neither get
    unavailable manifests.
    """
    variants = variants or list(VARIANTS)
    tf_checkpoints = tf_checkpoints or {}
    output.mkdir(parents=True, exist_ok=True)
    copy_labels(dataset.root / "classes.tsv", output)

    built: list[Path] = []
    for name in variants:
        if name in tf_checkpoints:
            imported = load_tf_checkpoint(tf_checkpoints[name], name)
            log.info("%s: loaded %s", name, imported.source)
            built += build_variant(output, name, imported.state_dict, imported.source, imported.sha256, dataset)
            continue

        weights = find_pypi_weights(name)
        if weights is None:
            write_unavailable(output, name)
            log.info("%s: unavailable (%s)", name, NO_WEIGHTS_REASON)
            continue
        log.info("%s: loading %s", name, weights.source)
        state_dict = load_pytorch_state_dict(weights.path)
        built += build_variant(output, name, state_dict, weights.source, weights.sha256, dataset)

    for model_dir in built:
        result = evaluate_model(model_dir, dataset)
        agreement = "" if result.agreement_with_fp32 is None else f", agreement with fp32 {result.agreement_with_fp32:.3f}"
        log.info(
            "%s: top-1 %.3f, top-5 %.3f on %d images%s (%.1f s)",
            result.model,
            result.top1,
            result.top5,
            result.images,
            agreement,
            result.seconds,
        )
