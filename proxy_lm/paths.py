"""Where uprise keeps its caches: `cache_root()` is `$UPRISE_CACHE`, else `~/.cache/uprise`.

Under it: `lm/` (converted LMs), `gguf/` (fetched optional LMs), `scores/` (the score cache).
A leaf module: loading, fetching and the score cache all use it.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("UPRISE_CACHE") or Path.home() / ".cache" / "uprise")
