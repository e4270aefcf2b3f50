"""Load test of `uprise serve`: N concurrent clients against `/v1/retrieve` and through the
OpenAI-compatible proxy, next to the query encoder's batched capacity measured in the same run.

    python bench/serve_load.py                          # 32 clients, 180k-prompt IVF index
    python bench/serve_load.py --clients 8 --duration 10 --size 10000   # a quick run

The service is the real app (`serve.api.create_app`, uvicorn, its encoder worker batching
concurrent queries) in a child process, over the embedded MiniLM retriever (exported as
`uprise train` does, untrained) and a pool of `--size` prompts in an `IVF1024,Flat` index
(nprobe 4, recall@3 1.0 at 180k in bench/retrieval.py). As in bench/retrieval.py the pool's
vectors are synthetic, seeded and clustered (encoding 180k real prompts takes longer than the
test); queries are real texts through the real encoder. The proxy's upstream is a minimal local
OpenAI-compatible server in another child process that answers at once, so the proxy numbers
are the service's own cost. First, before the service starts, the parent measures the encoder's
batched capacity on the idle machine (queries/s of `encode_query` at 256 queries per call, as
bench/retrieval.py, and of the serving path at the service's `--max-batch`). Then each phase
runs `--clients` asyncio clients (one connection each) sending varied queries back to
back for `--duration` seconds (aiohttp, whose client costs about a tenth of httpx's CPU per
request: the load generator shares the machine); a request counts as an error when it fails
or its answer is not k prompts (the proxy: not the upstream's answer). Prints a table and writes
bench/results/serve_load.json: requests, errors, req/s, p50/p99 latency, req/s as a share of
each batched capacity, and the encoder's mean batch size (from the service's /metrics).
Timings depend on the machine: the clients share its cores with the service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from load_test import free_port  # noqa: E402
from retrieval import load_encoder, query_texts, synthetic  # noqa: E402

from flan_data import write_json  # noqa: E402

K, FACTORY, NPROBE, SEED = 3, "IVF1024,Flat", 4, 0
CLUSTERS = ["sentiment", "nli", "paraphrase", "commonsense", "closed_book_qa"]
CHAT_ANSWER = {"object": "chat.completion",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]}


def synthetic_retriever(size: int, workdir: Path):
    """`PromptRetriever` over the embedded MiniLM and `size` synthetic clustered prompts."""
    from flan_data.schema import Prompt
    from retriever.index import build_index, set_search_params
    from serve import PromptRetriever

    encoder = load_encoder(workdir)
    dim = encoder.get_sentence_embedding_dimension()
    p_emb = synthetic(size, dim, SEED, max(10, size // 100))  # (size, dim)
    index = build_index(p_emb, FACTORY if size >= 40_000 else "Flat", seed=SEED)
    set_search_params(index, {"nprobe": NPROBE} if size >= 40_000 else None)
    prompts = [Prompt(f"p{i}", f"task{i % 50}", CLUSTERS[i % len(CLUSTERS)], i,
                      f"Synthetic demonstration {i}. Answer: yes") for i in range(size)]
    return PromptRetriever(encoder, index, prompts, gpu=False)


def serve_role(args) -> None:
    import uvicorn

    from serve.api import ServeSettings, create_app

    with tempfile.TemporaryDirectory() as tmp:
        retriever = synthetic_retriever(args.size, Path(tmp))
    retriever.encode_queries(query_texts(8))  # warm-up
    settings = ServeSettings(port=args.port, upstream=args.upstream, max_batch=args.max_batch)
    uvicorn.run(create_app(retriever, settings), host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False)


def upstream_role(args) -> None:
    """A minimal OpenAI-compatible server that answers every POST at once."""
    import uvicorn

    body = json.dumps(CHAT_ANSWER).encode()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


def capacity(size: int, max_batch: int) -> dict:
    """Batched encode throughput of the service's encoder on the idle machine."""
    from serve.prompt_retriever import encode_queries

    with tempfile.TemporaryDirectory() as tmp:
        encoder = load_encoder(Path(tmp))
    texts = query_texts(512)
    encoder.encode_query(texts[:8], show_progress_bar=False)
    out = {}
    for name, fn, per_call in [
        ("encode_query_256", lambda b: encoder.encode_query(b, batch_size=256,
                                                            show_progress_bar=False), 256),
        (f"serving_path_{max_batch}", lambda b: encode_queries(encoder, b), max_batch),
    ]:
        rates = []
        for _ in range(5):  # the best of 5 passes (the first one warms up)
            t0 = time.perf_counter()
            for start in range(0, len(texts), per_call):
                fn(texts[start:start + per_call])
            rates.append(len(texts) / (time.perf_counter() - t0))
        out[name] = round(max(rates), 1)
    return out


def http(method: str, url: str, body: dict | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, resp.read().decode()


def start(role: str, port: int, extra: list[str], ready_path: tuple[str, str],
          timeout_s: float = 600):
    cmd = [sys.executable, __file__, "--role", role, "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{role} exited: {proc.stderr.read()[-2000:]}")
        try:
            if http(ready_path[0], url + ready_path[1],
                    {} if ready_path[0] == "POST" else None)[0] == 200:
                return proc, url
        except OSError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise TimeoutError(f"{role} did not answer within {timeout_s} s")


async def load(url: str, kind: str, clients: int, duration_s: float) -> dict:
    import aiohttp

    texts = query_texts(4096)
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + duration_s

    async def client(worker: int) -> None:
        async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=30)) as http:
            i = worker
            while time.monotonic() < deadline:
                text = texts[i % len(texts)]
                t0 = time.perf_counter()
                try:
                    ok = await request(http, kind, text)
                except Exception as err:  # noqa: BLE001 - every failure is counted
                    ok = f"{type(err).__name__}: {err}"
                if ok is True:
                    latencies.append(1e3 * (time.perf_counter() - t0))
                else:
                    errors.append(str(ok)[:200])
                i += clients

    t0 = time.perf_counter()
    await asyncio.gather(*(client(w) for w in range(clients)))
    wall = time.perf_counter() - t0
    ms = np.asarray(latencies or [float("nan")])
    return {"kind": kind, "clients": clients, "wall_s": round(wall, 2),
            "requests": len(latencies), "errors": len(errors), "error_samples": errors[:5],
            "rps": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1)}


async def request(http, kind: str, text: str):
    if kind == "retrieve":
        async with http.post("/v1/retrieve", json={"query": text, "k": K}) as resp:
            answer = await resp.read()
            return True if resp.status == 200 and len(json.loads(answer)["prompts"]) == K \
                else f"{resp.status}: {answer[:200]!r}"
    body = {"model": "m", "messages": [{"role": "user", "content": text}], "uprise": {"k": K}}
    async with http.post("/v1/chat/completions", json=body) as resp:
        answer = await resp.read()
        ids = resp.headers.get("x-uprise-prompt-ids", "")
        return True if resp.status == 200 and json.loads(answer) == CHAT_ANSWER \
            and len(ids.split(",")) == K else f"{resp.status}: {answer[:200]!r}"


def batch_stats(metrics_text: str) -> dict:
    def value(name: str) -> float:
        m = re.search(rf"^{name} ([0-9.e+]+)$", metrics_text, re.M)
        return float(m.group(1)) if m else float("nan")

    calls, queries = value("uprise_encoder_batch_queries_count"), \
        value("uprise_encoder_batch_queries_sum")
    return {"encoder_calls": int(calls), "mean_batch": round(queries / max(calls, 1), 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--size", type=int, default=180_000, help="prompts in the pool")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--out", default=str(BENCH / "results" / "serve_load.json"))
    parser.add_argument("--role", choices=["bench", "serve", "upstream"], default="bench",
                        help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "serve":
        return serve_role(args)
    if args.role == "upstream":
        return upstream_role(args)
    run_bench(args)


def run_bench(args) -> None:
    import torch

    from proxy_lm.loading import cpu_name

    cap = capacity(args.size, args.max_batch)
    up_proc, up_url = start("upstream", free_port(), [], ("POST", "/v1/chat/completions"))
    sv_proc, sv_url = start("serve", free_port(), ["--size", str(args.size), "--upstream",
                                                   up_url + "/v1", "--max-batch",
                                                   str(args.max_batch)], ("GET", "/readyz"))
    phases = []
    try:
        for kind in ("retrieve", "proxy"):
            before = batch_stats(http("GET", sv_url + "/metrics")[1])
            result = asyncio.run(load(sv_url, kind, args.clients, args.duration))
            after = batch_stats(http("GET", sv_url + "/metrics")[1])
            calls = after["encoder_calls"] - before["encoder_calls"]
            result["encoder_calls"] = calls
            result["mean_batch"] = round(result["requests"] / max(calls, 1), 1)
            result["share_of_capacity"] = {name: round(result["rps"] / qps, 3)
                                           for name, qps in cap.items()}
            phases.append(result)
    finally:
        for proc in (sv_proc, up_proc):
            proc.terminate()
            proc.wait(30)
    report = {"machine": {"cpu": cpu_name(), "platform": platform.platform(),
                          "torch_threads": torch.get_num_threads()},
              "encoder": "embedded:all-MiniLM-L6-v2", "pool": args.size,
              "index": FACTORY if args.size >= 40_000 else "Flat", "k": K,
              "max_batch": args.max_batch, "capacity_qps": cap, "target_share": 0.7,
              "phases": phases}
    print(f"cpu {cpu_name()}; pool {args.size:,} ({report['index']}); encoder capacity "
          + ", ".join(f"{k} {v:.0f} q/s" for k, v in cap.items()))
    names = list(cap)
    print(f"{'phase':<9} {'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>7} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'batch':>6} " + " ".join(f"{'/' + n:>18}" for n in names))
    for p in phases:
        print(f"{p['kind']:<9} {p['clients']:>7} {p['requests']:>8} {p['errors']:>6} "
              f"{p['rps']:>7.1f} {p['p50_ms']:>7.1f} {p['p99_ms']:>7.1f} {p['mean_batch']:>6.1f} "
              + " ".join(f"{p['share_of_capacity'][n]:>18.0%}" for n in names))
    out = Path(args.out)
    write_json(out, report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
