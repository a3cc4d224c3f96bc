"""Labelled image folders (``images/`` plus ``labels.tsv``) and their preprocessed tensors."""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .preprocessing import preprocess_file


@dataclass
class LabelledImages:
    """A folder with ``images/`` and ``labels.tsv`` (header ``file  index  wnid``).

    Preprocessed tensors are cached per resolution, because the FP32 and INT8
    models, and the INT8 calibration, all read the same images.
    """

    root: Path
    files: list[str]
    labels: np.ndarray
    _tensors: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.root.resolve().name

    @property
    def image_dir(self) -> Path:
        return self.root / "images"

    def tensor(self, resolution: int) -> np.ndarray:
        """Return all images preprocessed for ``resolution`` as float32 [N, 3, R, R]."""
        cached = self._tensors.get(resolution)
        if cached is not None:
            return cached
        paths = [self.image_dir / file for file in self.files]
        # Pillow releases the GIL while decoding and resizing, so threads scale.
        with ThreadPoolExecutor() as pool:
            arrays = list(pool.map(lambda path: preprocess_file(path, resolution), paths))
        tensor = np.stack(arrays)
        self._tensors[resolution] = tensor
        return tensor


def load_labelled_images(root: str | Path) -> LabelledImages:
    """Read ``labels.tsv`` of a labelled folder; raises FileNotFoundError or ValueError when it is invalid."""
    root = Path(root)
    labels_path = root / "labels.tsv"
    if not labels_path.is_file():
        raise FileNotFoundError(f"{labels_path} not found; expected a folder with images/ and labels.tsv")

    files: list[str] = []
    labels: list[int] = []
    with labels_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if reader.fieldnames is None or not {"file", "index"} <= set(reader.fieldnames):
            raise ValueError(f"{labels_path} must have a header with the columns file and index")
        for row in reader:
            files.append(row["file"])
            labels.append(int(row["index"]))

    if not files:
        raise ValueError(f"{labels_path} lists no images")
    missing = [file for file in files if not (root / "images" / file).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images listed in {labels_path} are missing, first {missing[0]}")
    return LabelledImages(root, files, np.asarray(labels, dtype=np.int64))
