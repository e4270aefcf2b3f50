"""Package exports: every public name resolves, unknown names fail, and imports stay light."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ["proxy_lm", "retriever", "serve"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves_and_unknown_names_fail(package):
    mod = importlib.import_module(package)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name
        assert name in dir(mod)
    with pytest.raises(AttributeError, match=rf"module '{package}' has no attribute 'nope'"):
        mod.nope  # noqa: B018


def test_importing_the_packages_loads_no_heavy_library():
    code = ("import sys, proxy_lm, retriever, serve; "
            "print(sorted(m for m in ('torch', 'faiss', 'transformers', 'gradio') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
