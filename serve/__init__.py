"""Serving a trained UPRISE retriever: `PromptRetriever` (retrieve, augment) and a Gradio demo.

Public names load lazily, so `import serve` stays light: torch, faiss and sentence-transformers
load with `PromptRetriever.from_pretrained`, gradio only with `build_demo` / `launch_demo`,
langchain-core only with `serve.langchain` (`UpriseExampleSelector` for `FewShotPromptTemplate`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PromptRetriever": "serve.prompt_retriever",
    "RetrievedPrompt": "serve.prompt_retriever",
    "RetrieverDirError": "serve.checks",
    "PromptFilter": "serve.filters",
    "mmr_order": "serve.mmr",
    "build_context": "serve.context",
    "count_tokens": "serve.context",
    "build_demo": "serve.demo",
    "launch_demo": "serve.demo",
    "retrieve_main": "serve.cli",
    "demo_main": "serve.cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'serve' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
