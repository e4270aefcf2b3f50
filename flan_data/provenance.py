"""What a run records next to its artefacts to be reproducible: library versions and platform."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

LIBRARIES = (
    "uprise", "torch", "transformers", "sentence-transformers", "faiss-cpu", "faiss-gpu",
    "datasets", "lightning", "gradio", "numpy", "bm25s",
)


def library_versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def run_info() -> dict[str, object]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": library_versions(),
    }
