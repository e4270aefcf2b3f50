"""`uprise <subcommand>`: dispatches to the thin CLI of the package that owns each stage.

    data       flan_data   pool, training queries, candidates, evaluation queries
    score      proxy_lm    score (prompt, query) candidates with the proxy LM
    fetch-lm   proxy_lm    fetch an optional stronger offline LM by pinned hash (Qwen2.5-0.5B)
    train      retriever   LightningCLI: fit the bi-encoder on the scores, export it
    index      retriever   encode a pool with an exported retriever into a FAISS index
    mine       retriever   next round's candidates: a retriever's (or BM25's) top-k + random ones
    retrieve   serve       top-k prompts / augmented input for a query
    eval       uprise      held-out eval: zero-shot, random, BM25, untrained, trained (+abstain)
    demo       serve       Gradio app to inspect retrieved prompts
    serve      serve       HTTP retrieval API + OpenAI-compatible augmenting proxy
    quickstart uprise      every stage end to end on the embedded models
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from flan_data.errors import CommandError

COMMANDS = {
    "data": ("flan_data.cli", "data_main"),
    "score": ("proxy_lm.cli", "score_main"),
    "fetch-lm": ("proxy_lm.fetch", "fetch_main"),
    "train": ("retriever.cli", "train_main"),
    "index": ("retriever.cli", "index_main"),
    "mine": ("retriever.cli", "mine_main"),
    "retrieve": ("serve.cli", "retrieve_main"),
    "eval": ("uprise.evaluation_cli", "eval_main"),
    "demo": ("serve.cli", "demo_main"),
    "serve": ("serve.api.cli", "serve_main"),
    "quickstart": ("uprise.quickstart", "quickstart_main"),
}


def _usage() -> str:
    lines = [line for line in __doc__.splitlines()[2:] if line.strip()]
    return "usage: uprise <command> [options]\n\ncommands:\n" + "\n".join(lines) + (
        "\n\n`uprise <command> --help` describes each command's options."
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        sys.exit(f"uprise: unknown command {command!r}; expected one of {', '.join(COMMANDS)}.\n"
                 "Run `uprise --help` for the list.")
    logging.basicConfig(
        level=os.environ.get("UPRISE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module, function = COMMANDS[command]
    getattr(importlib.import_module(module), function)(rest)


USER_ERRORS = (ValueError, KeyError, OSError, CommandError)
"""What a bad option, input or file raises below the CLI (their messages say how to fix it).
Anything else, e.g. a `LeakageError` ("this is a bug"), is internal and keeps its traceback."""


def run() -> None:
    """The console entry point. Exit status: 0 done; 2 a user error, shown as one line (an
    exception in `USER_ERRORS`, a command's own `sys.exit(message)` or an argparse error);
    1 an internal error, with its traceback. `UPRISE_DEBUG=1` shows user errors' tracebacks."""
    try:
        main()
    except SystemExit as done:
        if isinstance(done.code, str):  # sys.exit("uprise: ..."): a user error, explained
            print(done.code, file=sys.stderr)
            sys.exit(2)
        raise
    except USER_ERRORS as err:
        if os.environ.get("UPRISE_DEBUG"):
            raise
        command = sys.argv[1] if len(sys.argv) > 1 else ""
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        print(f"uprise {command}: error: {type(err).__name__}: {message}\n"
              "(set UPRISE_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
