"""`uprise serve`: the HTTP retrieval API and the OpenAI-compatible augmenting proxy.

`create_app(retriever, settings)` builds the FastAPI app (`serve.api.app`), `ServeSettings` holds
its options (`serve.api.settings`), `serve_main(argv)` is the command line (`serve.api.cli`).
Importing this package loads nothing heavy: fastapi, uvicorn and aiohttp load with the module that
needs them (`pip install 'uprise[serve]'`).
"""

from __future__ import annotations

from flan_data.lazy import lazy_exports

_EXPORTS = {
    "create_app": "serve.api.app",
    "ServeSettings": "serve.api.settings",
    "QueryBatcher": "serve.api.batcher",
    "serve_main": "serve.api.cli",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
