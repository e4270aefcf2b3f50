"""Lazy package exports (PEP 562), so importing a package does not import torch or faiss.

Contract: `__getattr__, __dir__ = lazy_exports(__name__, {"Name": "package.module", ...})` in a
package's `__init__.py`; `package.Name` imports `package.module` on first use and caches the
value in the package namespace; unknown names raise `AttributeError`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level `__getattr__` and `__dir__` serving `exports` (name -> module)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
