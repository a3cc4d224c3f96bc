"""Soak test: mixed valid and invalid traffic at a fraction of capacity.

Starts effnet-serve on 127.0.0.1 with the real model repository, measures
its capacity with a short closed-loop burst of valid requests, then sends
valid requests to several models, over the REST API and the Open Inference
Protocol (JSON and binary tensor data), mixed with invalid ones (corrupt,
truncated, unsupported and oversized images, unknown models, malformed JSON
and OIP bodies) at `--load` of that capacity for `--duration` seconds.
Prints the server's resident memory at the start, every `--rss-interval`
seconds and at the end of the soak, and the response counts by status and
error code. Every loop is bounded by time and count.

Usage: .venv/bin/python scripts/soak.py --binary target/release/effnet-serve --duration 1800
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VALID_MODELS = [
    "efficientnet-lite0-int8",
    "efficientnet-lite0-fp32",
    "efficientnet-lite1-int8",
    "efficientnet-lite2-int8",
]
# Share of requests that are invalid.
INVALID_SHARE = 0.3
# Requests per worker at most, whatever the duration: a hard bound on the loop.
MAX_REQUESTS_PER_WORKER = 1_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+)", status, re.M).group(1))


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = 30.0) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status, "ok"
    except urllib.error.HTTPError as error:
        try:
            detail = json.loads(error.read())["error"]
            # REST errors carry a code; OIP errors are the protocol's plain message.
            code = detail["code"] if isinstance(detail, dict) else "oip_error"
        except (ValueError, KeyError, TypeError):
            code = "unparsed"
        return error.code, code
    except (urllib.error.URLError, OSError) as error:
        return 0, type(error).__name__


def requests(sample: Path) -> tuple[list, list]:
    """(valid, invalid) lists of (path, body, headers)."""
    photos = sorted((sample / "images").iterdir())[:50]
    jpegs = [p.read_bytes() for p in photos]
    png_bomb = (
        b"\x89PNG\r\n\x1a\n"
        + bytes.fromhex("0000000d49484452") + (100_000).to_bytes(4, "big") * 2
        + bytes.fromhex("0802000000") + b"\x00\x00\x00\x00"
    )
    rest = "/v1/models/efficientnet-lite0-int8/classify"
    oip = "/v2/models/efficientnet-lite0-int8/infer"
    jpeg = {"content-type": "image/jpeg"}
    json_type = {"content-type": "application/json"}
    valid = [(f"/v1/models/{m}/classify", j, jpeg) for m in VALID_MODELS for j in jpegs[:10]]
    valid += [(f"/v2/models/{m}/infer", *oip_binary(j)) for m in VALID_MODELS for j in jpegs[10:15]]
    invalid = [
        (rest, jpegs[0][: len(jpegs[0]) // 2], jpeg),
        (rest, os.urandom(2048), jpeg),
        (rest, png_bomb, {"content-type": "image/png"}),
        (rest, b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00mif1", {"content-type": "image/avif"}),
        ("/v1/models/efficientnet-lite9-int8/classify", jpegs[1], jpeg),
        (rest, b'{"image": "***"}', json_type),
        (rest, b"", jpeg),
        ("/v1/models/efficientnet-lite3-int8/classify", jpegs[2], jpeg),
        (oip, b'{"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES"', json_type),
        (oip, json.dumps({"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1]}]}).encode(),
         json_type),
        # A JSON string is read as UTF-8 text, which is no image.
        (oip, json.dumps({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": ["not an image"]}]}).encode(),
         json_type),
        (oip, *oip_binary(jpegs[3], declared=len(jpegs[3]) + 100)),
    ]
    return valid, invalid


def oip_binary(image: bytes, declared: int | None = None) -> tuple[bytes, dict[str, str]]:
    """Build an OIP inference request with `image` as binary tensor data.

    Its output sets the classification parameter to 5. `declared` replaces the byte count
    in the header, to make it wrong.
    """
    raw = len(image).to_bytes(4, "little") + image
    header = json.dumps(
        {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES",
                     "parameters": {"binary_data_size": len(raw) if declared is None else declared}}],
         "outputs": [{"name": "logits", "parameters": {"classification": 5}}]}
    ).encode()
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))}
    return header + raw, headers


def run_workers(base: str, workers: int, seconds: float, interval: float, valid, invalid, share: float):
    """Each worker sends one request per `interval` seconds (0: back to back)."""
    counts: collections.Counter = collections.Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        next_at = time.monotonic() + rng.random() * interval
        for _ in range(MAX_REQUESTS_PER_WORKER):
            now = time.monotonic()
            if now >= stop:
                return
            if interval and now < next_at:
                time.sleep(min(next_at - now, stop - now))
                continue
            next_at += interval
            kind, pool = ("invalid", invalid) if rng.random() < share else ("valid", valid)
            path, body, headers = rng.choice(pool)
            started = time.monotonic()
            status, code = post(base + path, body, headers)
            with lock:
                counts[(kind, status, code)] += 1
                if kind == "valid" and status == 200:
                    latencies.append(time.monotonic() - started)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", type=Path, default=ROOT / "target/release/effnet-serve")
    parser.add_argument("--duration", type=float, default=1800.0, help="soak seconds (default 1800)")
    parser.add_argument("--load", type=float, default=0.7, help="fraction of measured capacity (default 0.7)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--probe-seconds", type=float, default=20.0)
    parser.add_argument("--rss-interval", type=float, default=60.0, help="seconds between RSS samples (default 60)")
    parser.add_argument(
        "--rate", type=float, help="requests per second; skips the capacity probe (to compare builds)"
    )
    args = parser.parse_args()

    sample = Path(os.environ.get("EFFNET_IMAGENET_SAMPLE", ROOT / "../shared/data/imagenet-sample"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(args.binary), "serve", "--http-addr", f"127.0.0.1:{port}", "--log-format", "json",
         "--model-repository", os.environ.get("EFFNET_MODEL_REPOSITORY", str(ROOT / "model-repository"))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(base + "/health/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        else:
            raise SystemExit("server not ready after 300 s")

        valid, invalid = requests(sample)
        if args.rate:
            rate = args.rate
            print(f"soak at {rate:.1f} req/s")
        else:
            counts, _ = run_workers(base, args.workers, args.probe_seconds, 0.0, valid, [], 0.0)
            ok = sum(n for (_, status, _), n in counts.items() if status == 200)
            capacity = ok / args.probe_seconds
            rate = capacity * args.load
            print(f"capacity {capacity:.1f} valid req/s with {args.workers} workers; soak at {rate:.1f} req/s")

        rss_start = rss_kib(server.pid)
        samples: list[int] = []
        done = threading.Event()

        def sample_rss() -> None:
            while not done.wait(args.rss_interval):
                samples.append(rss_kib(server.pid))

        sampler = threading.Thread(target=sample_rss)
        sampler.start()
        started = time.monotonic()
        try:
            counts, latencies = run_workers(
                base, args.workers, args.duration, args.workers / rate, valid, invalid, INVALID_SHARE
            )
        finally:
            done.set()
            sampler.join()
        elapsed = time.monotonic() - started
        rss_end = rss_kib(server.pid)
        peak = rss_kib(server.pid, "VmHWM")

        total = sum(counts.values())
        print(f"soak {elapsed:.0f} s, {total} requests ({total / elapsed:.1f}/s), server alive: {server.poll() is None}")
        print(f"RSS start {rss_start / 1024:.1f} MiB, end {rss_end / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB")
        print(f"RSS every {args.rss_interval:.0f} s (MiB): " + " ".join(f"{kib / 1024:.0f}" for kib in samples))
        latencies.sort()
        if latencies:
            p50, p99 = (latencies[int(q * (len(latencies) - 1))] * 1000 for q in (0.5, 0.99))
            print(f"valid latency p50 {p50:.0f} ms, p99 {p99:.0f} ms")
        print("kind     status  code                        count")
        print("(OIP error bodies carry only a message, so their code reads oip_error)")
        for (kind, status, code), n in sorted(counts.items()):
            print(f"{kind:<8} {status:<7} {code:<27} {n}")
        unexpected = sum(n for (kind, status, _), n in counts.items() if status in (0, 500))
        return 1 if unexpected or server.poll() is not None else 0
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
