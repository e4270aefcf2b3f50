"""Serving a trained UPRISE retriever: `PromptRetriever` (retrieve, augment) and a Gradio demo.

Public names load lazily, so `import serve` stays light: torch, faiss and sentence-transformers
load with `PromptRetriever.from_pretrained`, gradio only with `build_demo` / `launch_demo`,
langchain-core only with `serve.langchain` (`UpriseExampleSelector` for `FewShotPromptTemplate`).
"""

from __future__ import annotations

from flan_data.lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
