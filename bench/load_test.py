"""Load test of the Gradio demo: N concurrent clients call its `/retrieve` API for a bounded time.

    python bench/load_test.py --retriever runs/quickstart/retriever            # starts the app
    python bench/load_test.py --url http://127.0.0.1:7860/ --clients 32 --duration 20

Without `--url` the app is started as a subprocess (`uprise demo`, bound to 127.0.0.1 on a free
port, `--concurrency` requests served at once) and stopped afterwards. Each client is a
`gradio_client.Client` in its own thread sending varied queries (some with a cluster filter or
diversity) back to back until the time is up; a request counts as an error when it raises or
returns no prompts. Prints and writes (bench/results/load_test.json) requests, errors, req/s and
p50/p99 latency. The target is zero errors; latency depends on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import write_json  # noqa: E402

QUERIES = [
    "Review: a gorgeous, moving film that stays with you. Is this review positive or negative?",
    "Premise: A man is playing a guitar on stage. Hypothesis: A musician is performing.",
    "Question: Which of these is a mammal? Options: shark, dolphin, trout. Answer:",
    "Write a sentence with the words river, boat and morning.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(retriever: str, concurrency: int, timeout_s: float = 180) -> tuple:
    port = free_port()
    cmd = [sys.executable, "-m", "uprise", "demo", "--retriever", retriever, "--port", str(port),
           "--concurrency", str(concurrency)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the demo exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise TimeoutError(f"the demo did not answer on {url} within {timeout_s} s")


def client_loop(url: str, worker: int, filters: list[str], deadline: float,
                latencies: list[float], errors: list[str]) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False)
    i = worker
    while time.monotonic() < deadline:
        query = QUERIES[i % len(QUERIES)] + f" (client {worker}, request {i})"
        clusters = [filters[i % len(filters)]] if filters and i % 3 == 0 else []
        diversity = 0.3 if i % 4 == 0 else 0.0
        t0 = time.perf_counter()
        try:
            table, augmented = client.predict(query, 3, [], clusters, [], diversity,
                                              api_name="/retrieve")
            rows = table.get("data") if isinstance(table, dict) else table
            if not rows or not augmented.endswith(query):
                raise ValueError(f"unexpected answer: {str(table)[:200]}")
            latencies.append(1e3 * (time.perf_counter() - t0))
        except Exception as err:  # noqa: BLE001 - every failure is counted and reported
            errors.append(f"{type(err).__name__}: {str(err)[:200]}")
        i += len(QUERIES) + 1


def pool_clusters(retriever: str | None) -> list[str]:
    if retriever is None:
        return []
    rows = (Path(retriever) / "prompts.jsonl").read_text(encoding="utf-8").splitlines()
    return sorted({json.loads(r)["cluster"] for r in rows if r.strip()})


def run(url: str, clients: int, duration: float, filters: list[str]) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + duration
    threads = [threading.Thread(target=client_loop, args=(url, w, filters, deadline, latencies,
                                                          errors)) for w in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    ok = len(latencies)
    return {"url": url, "clients": clients, "duration_s": duration, "wall_s": round(wall, 1),
            "requests": ok + len(errors), "ok": ok, "errors": len(errors),
            "error_samples": sorted(set(errors))[:5], "req_per_s": round(ok / wall, 2),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1) if ok else None,
            "p99_ms": round(float(np.percentile(latencies, 99)), 1) if ok else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--retriever", help="indexed retriever directory (starts the app)")
    parser.add_argument("--url", help="an already running demo instead")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=4, help="app's concurrency limit")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "load_test.json"))
    args = parser.parse_args(argv)
    if not (args.url or args.retriever):
        parser.error("pass --retriever DIR (to start the app) or --url URL")
    proc = None
    if args.url is None:
        proc, url = start_app(args.retriever, args.concurrency)
    else:
        url = args.url
    try:
        result = run(url, args.clients, args.duration, pool_clusters(args.retriever))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    result.update(retriever=args.retriever, app_concurrency=args.concurrency)
    print(f"{result['clients']} clients, {result['wall_s']} s: {result['requests']} requests, "
          f"{result['errors']} errors, {result['req_per_s']} req/s, "
          f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    for sample in result["error_samples"]:
        print("  error:", sample)
    out = Path(args.out)
    write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
