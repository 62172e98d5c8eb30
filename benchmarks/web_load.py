"""Load test of ``saywhy serve`` on loopback: 20 concurrent clients x 50 explain requests of one image.

The server runs as its own process (``saywhy serve``, one torch thread), so its peak memory
(VmHWM) is its own; the clients are threads here, each with one keep-alive connection,
POSTing the same synthbirds test image's PNG bytes to ``/api/explain`` (upload, sniff, explain).
Next to it: the bare ``session.explain`` latency of the same image in this process, and,
smaller, the latency of the full Explain page (``/explain?image=ID``: heatmaps and pictures).
Bounded: loopback only, a timeout on every request and on the whole run.

    PYTHONPATH=src python benchmarks/web_load.py            # writes benchmarks/results/web_load.json
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXPLAINER = Path("/work/bench_home/explainers/synthbirds-2fb845855c72")
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def wait_until_serving(port: int, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not start in time")


def client(port: int, method: str, path: str, body: bytes | None, n: int, latencies: list, errors: list) -> None:
    connection = http.client.HTTPConnection(HOST, port, timeout=120)
    for _ in range(n):
        started = time.perf_counter()
        try:
            connection.request(method, path, body=body, headers={"content-type": "image/png"} if body else {})
            answer = connection.getresponse()
            data = answer.read()
            if answer.status != 200:
                errors.append(f"{answer.status}: {data[:200]!r}")
        except (OSError, http.client.HTTPException) as error:
            errors.append(repr(error))
            connection.close()
            connection = http.client.HTTPConnection(HOST, port, timeout=120)
        latencies.append(time.perf_counter() - started)
    connection.close()


def hammer(port: int, method: str, path: str, body: bytes | None, clients: int, requests: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    threads = [threading.Thread(target=client, args=(port, method, path, body, requests, latencies, errors))
               for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    wall = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {"clients": clients, "requests_per_client": requests, "requests": len(latencies), "errors": len(errors),
            "first_errors": errors[:3], "wall_s": round(wall, 2), "throughput_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "max_ms": round(float(ms.max()), 1)}


def bare_explain_ms(image, repeats: int) -> dict:
    import torch

    from saywhy.explain.explainer import Explainer
    from saywhy.pipeline import ExplainerSession

    torch.set_num_threads(1)
    session = ExplainerSession.from_checkpoint(Explainer.load(EXPLAINER))
    session.explain(image)  # warm
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.explain(image)
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(times), 2), "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--home", type=Path, default=Path("/work/bench_home/web"),
                        help="workspace for the server's feature cache (default /work/bench_home/web)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "web_load.json")
    args = parser.parse_args()
    if not EXPLAINER.is_dir():
        raise SystemExit(f"the demo explainer {EXPLAINER} is not here: run 'saywhy demo' with SAYWHY_HOME=/work/bench_home")

    from PIL import Image

    from saywhy.data.cub import read_cub

    meta = json.loads((EXPLAINER / "explainer.json").read_text())["metadata"]
    dataset = read_cub(meta["dataset_root"])
    record = dataset.split(train=False)[0]
    image = Image.open(record.path).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    png = buffer.getvalue()

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "saywhy", "--home", str(args.home), "--quiet", "serve",
                               "--explainer", str(EXPLAINER), "--host", HOST, "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        started = time.perf_counter()
        wait_until_serving(port, server, timeout=600)
        startup = time.perf_counter() - started
        hammer(port, "POST", "/api/explain", png, 2, 3)  # warm: the first upload, imports
        idle_rss = memory_kb(server.pid, "VmRSS")
        api = hammer(port, "POST", "/api/explain", png, args.clients, args.requests)
        page = hammer(port, "GET", f"/explain?image={record.image_id}", None, args.clients, 5)
        peak = memory_kb(server.pid, "VmHWM")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    bare = bare_explain_ms(image, repeats=50)
    result = {
        "what": "saywhy serve on loopback, one server process (1 torch thread); clients are threads with keep-alive",
        "explainer": str(EXPLAINER), "image": record.path.name, "image_size": list(image.size),
        "startup_s": round(startup, 1), "api_explain": api, "explain_page": page,
        "bare_session_explain": bare,
        "server_rss_mb": {"idle_after_warmup": round(idle_rss / 1024, 1), "peak": round(peak / 1024, 1)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    if api["errors"] or page["errors"]:
        raise SystemExit(f"{api['errors'] + page['errors']} requests failed")


if __name__ == "__main__":
    main()
