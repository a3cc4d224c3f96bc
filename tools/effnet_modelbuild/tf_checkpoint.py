"""Import the official EfficientNet-Lite TensorFlow checkpoints as canonical state dicts.

Google publishes the Lite weights as one tarball per variant
(``efficientnet-liteN.tar.gz``), each holding a TF1 name-based checkpoint
(``checkpoint``, ``model.ckpt.index``, ``model.ckpt.data-00000-of-00001``)
written by the training script in tensorflow/tpu
(``models/official/efficientnet``). Its variables are named by scope:

==========================================================  =============================
TensorFlow variable (under ``efficientnet-liteN/``)          canonical key
==========================================================  =============================
``stem/conv2d/kernel``                     [3, 3, 3, 32]     ``_conv_stem.weight``
``stem/tpu_batch_normalization/*``                           ``_bn0.*``
``blocks_K/conv2d/kernel``                 [1, 1, C, E]      ``_blocks.K._expand_conv.weight``
``blocks_K/tpu_batch_normalization/*``                       ``_blocks.K._bn0.*``
``blocks_K/depthwise_conv2d/depthwise_kernel`` [k, k, E, 1]  ``_blocks.K._depthwise_conv.weight``
``blocks_K/tpu_batch_normalization_1/*``                     ``_blocks.K._bn1.*``
``blocks_K/conv2d_1/kernel``               [1, 1, E, O]      ``_blocks.K._project_conv.weight``
``blocks_K/tpu_batch_normalization_2/*``                     ``_blocks.K._bn2.*``
``head/conv2d/kernel``                                       ``_conv_head.weight``
``head/tpu_batch_normalization/*``                           ``_bn1.*``
``head/dense/kernel``                      [1280, 1000]      ``_fc.weight``
``head/dense/bias``                                          ``_fc.bias``
==========================================================  =============================

Blocks without expansion (expand ratio 1, only ``blocks_0``) have no expansion
convolution, so their layer names shift down by one: ``conv2d`` is the
projection, ``tpu_batch_normalization`` follows the depthwise convolution and
``tpu_batch_normalization_1`` the projection. Batch-norm suffixes map
``gamma``, ``beta``, ``moving_mean``, ``moving_variance`` to ``weight``,
``bias``, ``running_mean``, ``running_var``.

Kernels are transposed from TensorFlow layouts to PyTorch ones: convolutions
HWIO to OIHW, depthwise HWCM to [C*M, 1, H, W], dense [in, out] to [out, in].
The training script keeps an exponential moving average of every weight and
batch-norm statistic as ``<name>/ExponentialMovingAverage``, and its
evaluation restores those averages. This importer does the same whenever the
checkpoint has them.

TensorFlow is imported only when a checkpoint is read, so the rest of the tool
runs without it (``scripts/setup-tf.sh`` installs it into ``.venv-tf``).
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .architecture import BATCH_NORM_SUFFIXES, Variant, blocks, expected_shapes, get_variant
from .weights import sha256_file

EMA_SUFFIX = "/ExponentialMovingAverage"

# Training state that checkpoints carry besides the model weights, ignored on
# import: the step counter and the TF2 object graph of tf.train.Checkpoint.
# Optimizer slots are named after their weight plus a suffix. The official
# training uses RMSProp, and fine-tuning setups often use Momentum or Adam.
BOOKKEEPING_VARIABLES = frozenset({"global_step", "_CHECKPOINTABLE_OBJECT_GRAPH"})
OPTIMIZER_SLOT_SUFFIXES = ("/RMSProp", "/RMSProp_1", "/Momentum", "/Adam", "/Adam_1")

TF_BATCH_NORM_NAMES = dict(zip(BATCH_NORM_SUFFIXES, ("gamma", "beta", "moving_mean", "moving_variance")))

TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")

# Number of names an error message lists before it summarizes the rest.
LISTED_NAMES = 8


class TfCheckpointError(ValueError):
    """A TensorFlow checkpoint is missing, unreadable, or does not fit the requested variant."""


class Layout(enum.Enum):
    """TensorFlow layout of a variable, and how it maps to the canonical PyTorch layout."""

    CONV = "HWIO"
    DEPTHWISE = "HWCM"
    DENSE = "IO"
    VECTOR = "C"

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """Convert a TensorFlow array to the canonical layout (a contiguous float32 copy)."""
        if self is Layout.CONV:
            array = array.transpose(3, 2, 0, 1)
        elif self is Layout.DEPTHWISE:
            height, width, channels, multiplier = array.shape
            array = array.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, height, width)
        elif self is Layout.DENSE:
            array = array.T
        return np.ascontiguousarray(array, dtype=np.float32)

    def to_tensorflow(self, array: np.ndarray) -> np.ndarray:
        """Convert a canonical array back to this TensorFlow layout (depthwise multiplier 1)."""
        if self is Layout.CONV:
            array = array.transpose(2, 3, 1, 0)
        elif self is Layout.DEPTHWISE:
            array = array.transpose(2, 3, 0, 1)
        elif self is Layout.DENSE:
            array = array.T
        return np.ascontiguousarray(array)

    def tensorflow_shape(self, canonical_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.to_tensorflow(np.empty(canonical_shape, dtype=np.uint8)).shape


@dataclass(frozen=True)
class TfVariable:
    """The checkpoint variable that fills one canonical state-dict key."""

    name: str
    layout: Layout


@dataclass(frozen=True)
class TfWeights:
    """A canonical state dict read from a TensorFlow checkpoint, with its provenance."""

    state_dict: dict[str, np.ndarray]
    source: str
    """Description for the manifest's ``weights.source``: file name and which values were used."""
    sha256: str
    """sha256 of the tarball, or of the checkpoint's data file when given a directory or prefix
    (for a checkpoint in several shards, the sha256 of the shards' concatenated hex digests)."""
    used_moving_average: bool


# === Name mapping ===


def model_scope(variant: Variant) -> str:
    return f"efficientnet-{variant.name}"


def _batch_norm_variables(key_prefix: str, tf_scope: str) -> dict[str, TfVariable]:
    return {
        f"{key_prefix}.{suffix}": TfVariable(f"{tf_scope}/{tf_name}", Layout.VECTOR)
        for suffix, tf_name in TF_BATCH_NORM_NAMES.items()
    }


def official_variables(variant: Variant) -> dict[str, TfVariable]:
    """Map every canonical key of ``variant`` to its variable in the official checkpoint."""
    scope = model_scope(variant)
    mapping = {"_conv_stem.weight": TfVariable(f"{scope}/stem/conv2d/kernel", Layout.CONV)}
    mapping.update(_batch_norm_variables("_bn0", f"{scope}/stem/tpu_batch_normalization"))

    for block in blocks(variant):
        block_scope = f"{scope}/blocks_{block.index}"
        if block.expand_channels is not None:
            mapping[f"{block.prefix}._expand_conv.weight"] = TfVariable(f"{block_scope}/conv2d/kernel", Layout.CONV)
            mapping.update(_batch_norm_variables(f"{block.prefix}._bn0", f"{block_scope}/tpu_batch_normalization"))
            project_conv, bn1, bn2 = "conv2d_1", "tpu_batch_normalization_1", "tpu_batch_normalization_2"
        else:
            project_conv, bn1, bn2 = "conv2d", "tpu_batch_normalization", "tpu_batch_normalization_1"
        mapping[f"{block.prefix}._depthwise_conv.weight"] = TfVariable(
            f"{block_scope}/depthwise_conv2d/depthwise_kernel", Layout.DEPTHWISE
        )
        mapping.update(_batch_norm_variables(f"{block.prefix}._bn1", f"{block_scope}/{bn1}"))
        mapping[f"{block.prefix}._project_conv.weight"] = TfVariable(f"{block_scope}/{project_conv}/kernel", Layout.CONV)
        mapping.update(_batch_norm_variables(f"{block.prefix}._bn2", f"{block_scope}/{bn2}"))

    mapping["_conv_head.weight"] = TfVariable(f"{scope}/head/conv2d/kernel", Layout.CONV)
    mapping.update(_batch_norm_variables("_bn1", f"{scope}/head/tpu_batch_normalization"))
    mapping["_fc.weight"] = TfVariable(f"{scope}/head/dense/kernel", Layout.DENSE)
    mapping["_fc.bias"] = TfVariable(f"{scope}/head/dense/bias", Layout.VECTOR)
    return mapping


def official_shapes(variant: Variant) -> dict[str, tuple[int, ...]]:
    """Map every official variable name of ``variant`` (without EMA suffix) to its TensorFlow shape."""
    canonical = expected_shapes(variant)
    return {
        variable.name: variable.layout.tensorflow_shape(canonical[key])
        for key, variable in official_variables(variant).items()
    }


# === Locating the checkpoint ===


def _list_names(names: list[str]) -> str:
    listed = ", ".join(names[:LISTED_NAMES])
    if len(names) > LISTED_NAMES:
        listed += f", ... ({len(names) - LISTED_NAMES} more)"
    return listed


def _safe_extract(tarball: Path, destination: Path) -> None:
    """Extract a tarball after checking that every member is a plain file or directory inside ``destination``."""
    try:
        with tarfile.open(tarball, "r:*") as archive:
            members = archive.getmembers()
            for member in members:
                parts = Path(member.name).parts
                if member.name.startswith(("/", "\\")) or os.path.isabs(member.name) or ".." in parts:
                    raise TfCheckpointError(
                        f"{tarball}: unsafe member path {member.name!r} (absolute or containing '..'); "
                        "nothing was extracted"
                    )
                if not (member.isfile() or member.isdir()):
                    raise TfCheckpointError(
                        f"{tarball}: member {member.name!r} is a link or special file; nothing was extracted"
                    )
            archive.extractall(destination, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as error:
        raise TfCheckpointError(f"{tarball}: invalid or truncated tarball: {error}") from error


def _prefix_in_directory(directory: Path) -> Path:
    """Find the one checkpoint prefix (a ``<prefix>.index`` file) in ``directory`` or its subdirectories."""
    indexes = sorted(directory.rglob("*.index"))
    if len(indexes) == 1:
        return indexes[0].with_suffix("")
    if not indexes:
        raise TfCheckpointError(f"{directory}: no TensorFlow checkpoint found (no *.index file)")

    # Several checkpoints: follow the `checkpoint` state file, whose
    # model_checkpoint_path may be absolute on the machine that trained it,
    # so only its last path component is trusted.
    for state_file in sorted(directory.rglob("checkpoint")):
        match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state_file.read_text(errors="replace"), re.M)
        if match:
            candidate = state_file.parent / Path(match.group(1)).name
            if candidate.with_name(candidate.name + ".index").is_file():
                return candidate
    found = [str(index.relative_to(directory)) for index in indexes]
    raise TfCheckpointError(
        f"{directory}: several checkpoints ({_list_names(found)}) and no `checkpoint` file naming one; "
        "pass the prefix of the one to import"
    )


def _prefix_of_file(path: Path) -> Path | None:
    if path.suffix in (".index", ".meta"):
        return path.with_suffix("")
    match = re.fullmatch(r"(.+)\.data-\d{5}-of-\d{5}", path.name)
    if match:
        return path.with_name(match.group(1))
    return None


def _sha256_data_files(paths: list[Path]) -> str:
    """Hash one data file as is, or several shards as the sha256 of their concatenated hex digests."""
    if len(paths) == 1:
        return sha256_file(paths[0])
    return hashlib.sha256("".join(sha256_file(path) for path in paths).encode()).hexdigest()


def _data_files(prefix: Path) -> list[Path]:
    return sorted(prefix.parent.glob(prefix.name + ".data-*-of-*"))


# === Reading ===


def _import_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as error:
        raise TfCheckpointError(
            "reading TensorFlow checkpoints needs TensorFlow, which is not installed in this Python; "
            "run scripts/setup-tf.sh and use .venv-tf/bin/python"
        ) from error
    return tf


def _efficientnet_scopes(scopes: set[str]) -> list[str]:
    return sorted(scope for scope in scopes if scope.startswith("efficientnet-"))


def _is_bookkeeping(name: str) -> bool:
    return name in BOOKKEEPING_VARIABLES or name.endswith(OPTIMIZER_SLOT_SUFFIXES)


def _select_variables(
    variant: Variant, shape_map: dict[str, list[int]], location: str
) -> tuple[dict[str, str], bool]:
    """Choose the checkpoint variable for every canonical key and check names and shapes.

    Returns the chosen checkpoint name per canonical key and whether those are
    the moving averages.
    """
    scope = model_scope(variant)
    model_names = {name for name in shape_map if not _is_bookkeeping(name)}
    scopes = {name.split("/", 1)[0] for name in model_names}
    if scope not in scopes:
        others = _efficientnet_scopes(scopes)
        if others:
            raise TfCheckpointError(
                f"{location}: checkpoint contains {', '.join(others)}, not {scope}; "
                f"import it as that variant or pass the {variant.name} checkpoint"
            )
        raise TfCheckpointError(
            f"{location}: no variables under {scope}/; this is not an EfficientNet-Lite checkpoint "
            f"(top-level scopes: {_list_names(sorted(scopes))})"
        )

    mapping = official_variables(variant)
    use_average = any(name.startswith(scope + "/") and name.endswith(EMA_SUFFIX) for name in model_names)

    chosen: dict[str, str] = {}
    missing: list[str] = []
    for key, variable in mapping.items():
        name = variable.name + EMA_SUFFIX if use_average else variable.name
        if name in shape_map:
            chosen[key] = name
        else:
            missing.append(name)
    if missing:
        hint = (
            " (the checkpoint has ExponentialMovingAverage copies for other variables, so these must have one too)"
            if use_average
            else ""
        )
        raise TfCheckpointError(
            f"{location}: {len(missing)} of {len(mapping)} {variant.name} variables missing{hint}: "
            f"{_list_names(missing)}; is the checkpoint complete and of variant {variant.name}?"
        )

    used = {variable.name for variable in mapping.values()}
    used |= {name + EMA_SUFFIX for name in used}
    unexpected = sorted(model_names - used)
    if unexpected:
        raise TfCheckpointError(
            f"{location}: {len(unexpected)} unexpected variables that {variant.name} has no place for: "
            f"{_list_names(unexpected)}; is the checkpoint of another variant or architecture?"
        )

    expected = expected_shapes(variant)
    wrong = []
    for key, name in chosen.items():
        want = mapping[key].layout.tensorflow_shape(expected[key])
        found = tuple(shape_map[name])
        if found != want:
            wrong.append(f"{name}: expected {list(want)}, found {list(found)}")
    if wrong:
        raise TfCheckpointError(
            f"{location}: {len(wrong)} variables have the wrong shape for {variant.name}: "
            f"{_list_names(wrong)}; is the checkpoint of another variant?"
        )
    return chosen, use_average


def _read_prefix(variant: Variant, prefix: Path, location: str) -> tuple[dict[str, np.ndarray], bool]:
    tf = _import_tensorflow()
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        shape_map = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as error:
        raise TfCheckpointError(f"{location}: failed to read the checkpoint index (corrupt or truncated?): {error}") from error

    chosen, use_average = _select_variables(variant, shape_map, location)
    mapping = official_variables(variant)

    state_dict: dict[str, np.ndarray] = {}
    for key, name in chosen.items():
        try:
            tensor = reader.get_tensor(name)
        except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as error:
            # The reader reports a short read as IndexError and a checksum mismatch as OpError.
            raise TfCheckpointError(
                f"{location}: failed to read variable {name} (checkpoint data corrupt or truncated?): {error}"
            ) from error
        state_dict[key] = mapping[key].layout.to_canonical(np.asarray(tensor))
    return state_dict, use_average


def load_tf_checkpoint(path: str | Path, variant_name: str) -> TfWeights:
    """Read an EfficientNet-Lite TensorFlow checkpoint into the canonical state dict of ``variant_name``.

    ``path`` is a checkpoint directory, a checkpoint prefix (``.../model.ckpt``),
    one of its ``.index``, ``.meta`` or ``.data-*`` files, or an official ``.tar.gz``
    tarball. Raises :class:`TfCheckpointError` with the reason when the path
    is missing, the files are corrupt, or the variables do not fill the
    variant's state dict exactly.
    """
    variant = get_variant(variant_name)
    path = Path(path)

    if path.is_dir():
        prefix = _prefix_in_directory(path)
    elif path.is_file() and _prefix_of_file(path) is not None:
        prefix = _prefix_of_file(path)
    elif path.is_file() and (path.name.endswith(TARBALL_SUFFIXES) or tarfile.is_tarfile(path)):
        return _load_tarball(path, variant)
    elif path.is_file():
        raise TfCheckpointError(
            f"{path}: not a TensorFlow checkpoint directory, prefix, .index/.meta/.data file or tarball"
        )
    elif Path(f"{path}.index").is_file():
        prefix = path
    else:
        raise TfCheckpointError(f"{path}: not found (expected a checkpoint directory, prefix or .tar.gz tarball)")

    data_files = _data_files(prefix)
    if not data_files:
        raise TfCheckpointError(f"{prefix}: checkpoint has an index but no {prefix.name}.data-* file")
    state_dict, use_average = _read_prefix(variant, prefix, str(prefix))
    return TfWeights(state_dict, _source(prefix.name, use_average), _sha256_data_files(data_files), use_average)


def _load_tarball(tarball: Path, variant: Variant) -> TfWeights:
    with tempfile.TemporaryDirectory(prefix="effnet-tf-checkpoint-") as temporary:
        directory = Path(temporary)
        _safe_extract(tarball, directory)
        prefix = _prefix_in_directory(directory)
        location = f"{tarball} ({prefix.relative_to(directory)})"
        state_dict, use_average = _read_prefix(variant, prefix, location)
    return TfWeights(state_dict, _source(tarball.name, use_average), sha256_file(tarball), use_average)


def _source(file_name: str, use_average: bool) -> str:
    values = "ExponentialMovingAverage values" if use_average else "raw values (no moving averages in the checkpoint)"
    return f"TensorFlow checkpoint {file_name}, {values}"
