"""`uprise retrieve` and `uprise demo`: thin command lines over `PromptRetriever` and the demo.

Contract: `retrieve_main(argv)` prints the top-k prompts for one query (a readable list, or one
JSON object with `--json`), optionally restricted by task/cluster filters (`--task`,
`--cluster`, `--exclude-task`, `--exclude-cluster`; repeatable or comma-separated), reranked
for variety (`--diversity`, MMR) and with the augmented LM input (`--augment`, within
`--max-tokens` counted by `--tokenizer` or whitespace words). `demo_main(argv)` serves the
Gradio app. Both take the argument list without the subcommand name; a bad retriever
directory exits with its error message instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from serve.filters import FILTER_KEYS
from serve.prompt_retriever import PromptRetriever, RetrievedPrompt, RetrieverDirError


def _retrieve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uprise retrieve", description="Top-k pool prompts for a task input."
    )
    parser.add_argument("--retriever", required=True,
                        help="exported, indexed retriever directory (`uprise train` + `index`)")
    parser.add_argument("--query", required=True, help="the task input; '-' reads it from stdin")
    parser.add_argument("-k", "--k", type=int, default=3, help="number of prompts (default 3)")
    for name, what in (("task", "only prompts of these tasks"),
                       ("cluster", "only prompts of these clusters"),
                       ("exclude-task", "never prompts of these tasks"),
                       ("exclude-cluster", "never prompts of these clusters")):
        parser.add_argument(f"--{name}", action="append", default=[], metavar="NAME[,NAME]",
                            help=f"{what} (repeatable or comma-separated)")
    parser.add_argument("--diversity", type=float, default=0.0,
                        help="MMR novelty weight in [0, 1]: 0 = plain top-k (default)")
    parser.add_argument("--augment", action="store_true",
                        help="also print the LM input: prompts (best last), then the query")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="token budget for --augment; lowest-ranked prompts are dropped first")
    parser.add_argument("--tokenizer", default=None,
                        help="HF tokenizer (the target LM's) counting --max-tokens; "
                             "default: whitespace words")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--device", default=None, help="encoder device, e.g. cpu or cuda")
    return parser


def retrieve_main(argv: list[str] | None = None) -> None:
    """`uprise retrieve --retriever DIR --query TEXT [-k 3] [--augment] [--json]`."""
    parser = _retrieve_parser()
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error(f"-k {args.k}: expected a positive number of prompts")
    if args.max_tokens is not None and args.max_tokens < 1:
        parser.error(f"--max-tokens {args.max_tokens}: expected a positive integer")
    query = sys.stdin.read() if args.query == "-" else args.query
    retriever = _load(args.retriever, args.device)
    filters = {key: [v for arg in getattr(args, key) for v in arg.split(",") if v]
               for key in FILTER_KEYS}
    try:
        hits = retriever.retrieve(query, k=args.k, filters=filters, diversity=args.diversity)
    except ValueError as err:  # a filter naming nothing in the pool, a bad diversity
        sys.exit(f"uprise: {err}")
    if not hits:
        sys.exit(f"uprise: no pool prompt passes the filters {_given(filters)}; loosen them "
                 f"(the pool's clusters: {retriever.clusters}).")
    augmented = None
    if args.augment:
        from serve.prompt_retriever import build_context

        tokenizer = _load_tokenizer(args.tokenizer) if args.tokenizer else None
        augmented = build_context(query, hits, args.max_tokens, tokenizer)
    if args.json:
        out = {"query": query, "k": args.k, "filters": _given(filters),
               "diversity": args.diversity, "prompts": [asdict(h) for h in hits]}
        if augmented is not None:
            out["augmented"] = augmented
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        print(_format_hits(hits))
        if augmented is not None:
            print("\n--- augmented prompt ---\n" + augmented)


def _given(filters: dict[str, list[str]]) -> dict[str, list[str]]:
    return {k: v for k, v in filters.items() if v}


def _format_hits(hits: list[RetrievedPrompt]) -> str:
    lines = []
    for h in hits:
        lines.append(f"{h.rank}. score={h.score:.4f} task={h.task} cluster={h.cluster} id={h.id}")
        lines.extend("   " + line for line in h.text.splitlines() or [""])
    return "\n".join(lines)


def _load(path: str, device: str | None) -> PromptRetriever:
    try:
        return PromptRetriever.from_pretrained(path, device=device)
    except (FileNotFoundError, RetrieverDirError) as err:
        sys.exit(f"uprise: {err}")


def _load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


def demo_main(argv: list[str] | None = None) -> None:
    """`uprise demo --retriever DIR [--host 127.0.0.1] [--port 7860] [--share]`."""
    parser = argparse.ArgumentParser(prog="uprise demo",
                                     description="Gradio app to inspect retrieved prompts.")
    parser.add_argument("--retriever", required=True, help="exported, indexed retriever directory")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (0.0.0.0 exposes it on the network)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="requests served at once; the rest queue (default 4)")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error(f"--concurrency {args.concurrency}: expected a positive integer")
    if not 1 <= args.port <= 65535:
        parser.error(f"--port {args.port}: expected a TCP port from 1 to 65535 "
                     "(e.g. the default 7860)")
    try:
        import gradio  # noqa: F401
    except ImportError:
        sys.exit("uprise demo needs gradio; install it with `pip install 'uprise[demo]'`.")
    from serve.demo import launch_demo

    try:
        launch_demo(args.retriever, host=args.host, port=args.port, share=args.share,
                    concurrency_limit=args.concurrency)
    except (FileNotFoundError, RetrieverDirError) as err:
        sys.exit(f"uprise: {err}")
