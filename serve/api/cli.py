"""`uprise serve`: runs the HTTP retrieval API (and, with `--upstream`, the augmenting proxy).

Contract: `serve_main(argv)` checks every option (`ServeSettings`) before the retriever loads,
then loads and verifies the retriever directory, and serves with uvicorn until SIGINT/SIGTERM;
on a signal it stops accepting connections, lets requests in flight finish (up to
`--graceful-timeout` seconds) and stops the encoder worker. Logs go to stderr as one JSON object
per line (`ts`, `level`, `logger`, then the record's fields or its message).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import fields

from serve.api.settings import INSERT_MODES, LOG_FIELDS, ServeSettings

OPTION_HELP = {
    "host": "address to bind (default 127.0.0.1; 0.0.0.0 exposes it on the network)",
    "port": "TCP port (default 8000)",
    "upstream": "OpenAI-compatible base URL to forward /v1/chat/completions and /v1/completions "
                "to, e.g. http://127.0.0.1:8080/v1 (default: no proxy)",
    "upstream_timeout_s": "seconds to wait for the upstream (connect and each read; default 60)",
    "upstream_api_key_env": "environment variable holding the upstream's API key (default: pass "
                            "the client's Authorization through when --api-key-env is not set)",
    "api_key_env": "environment variable holding the key clients must send as "
                   "'Authorization: Bearer <key>' (default: no key)",
    "default_k": "prompts per query when a request does not say (default 3)",
    "max_k": "largest k a request may ask for (default 32)",
    "max_queries": "queries per /v1/retrieve or /v1/augment request (default 256)",
    "max_query_chars": "characters per query (default 20000)",
    "max_body_bytes": "request body size limit (default 4 MiB)",
    "max_batch": "queries per encoder call when concurrent requests are batched (default 64)",
    "insert": "where the proxy puts prompts: 'user' (before the last user message, as "
              "PromptRetriever.augment) or 'system' (a system message; default user)",
    "system_template": "text of the system message for --insert system; {prompts} marks the "
                       "place of the prompts",
    "log_queries": "log query text (off by default: logs carry counts and prompt ids only)",
    "graceful_timeout_s": "seconds requests in flight get to finish on shutdown (default 30)",
}
FLAG = {"upstream_timeout_s": "upstream-timeout", "graceful_timeout_s": "graceful-timeout",
        "default_k": "k"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uprise serve", description="HTTP retrieval API and OpenAI-compatible augmenting "
                                         "proxy over a trained, indexed retriever.")
    parser.add_argument("--retriever", required=True, help="exported, indexed retriever directory")
    parser.add_argument("--tokenizer", default=None,
                        help="HF tokenizer (the target LM's) counting /v1/augment's max_tokens; "
                             "default: whitespace words")
    parser.add_argument("--device", default=None, help="encoder device, e.g. cpu or cuda")
    for f in fields(ServeSettings):
        flags = ["--" + FLAG.get(f.name, f.name).replace("_", "-")]
        flags += ["-k"] if f.name == "default_k" else []
        if f.type == "bool":
            parser.add_argument(*flags, dest=f.name, action="store_true", help=OPTION_HELP[f.name])
            continue
        kind = {"int": int, "float": float}.get(f.type, str)
        parser.add_argument(*flags, dest=f.name, type=kind, default=f.default,
                            choices=INSERT_MODES if f.name == "insert" else None,
                            help=OPTION_HELP[f.name])
    return parser


def serve_main(argv: list[str] | None = None) -> None:
    """`uprise serve --retriever DIR [--port 8000] [--upstream URL] ...`."""
    parser = _parser()
    args = vars(parser.parse_args(argv))
    retriever_dir, tokenizer_name, device = (args.pop(n) for n in ("retriever", "tokenizer",
                                                                   "device"))
    try:
        settings = ServeSettings(**args)
    except ValueError as err:
        parser.error(str(err))
    try:
        import uvicorn

        from serve.api.app import create_app
    except ImportError as err:
        sys.exit(f"uprise serve needs fastapi, uvicorn, aiohttp and prometheus-client ({err}); "
                 "install them with `pip install 'uprise[serve]'`.")
    from serve.prompt_retriever import PromptRetriever, RetrieverDirError

    _json_logging()
    try:
        retriever = PromptRetriever.from_pretrained(retriever_dir, device=device)
    except (FileNotFoundError, RetrieverDirError) as err:
        sys.exit(f"uprise: {err}")
    tokenizer = None
    if tokenizer_name:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
    app = create_app(retriever, settings, tokenizer)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=settings.graceful_timeout_s)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: the record's structured fields (`extra={LOG_FIELDS: {...}}`,
    as the service's request lines carry) where it has them, else its message."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
               "level": record.levelname, "logger": record.name}
        fields = getattr(record, LOG_FIELDS, None)
        out.update(fields if isinstance(fields, dict) else {"message": record.getMessage()})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def _json_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(root.level if root.level != logging.WARNING else logging.INFO)
