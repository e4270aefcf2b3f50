"""The import graph's rules (ARCHITECTURE.md floors): no cycles between first-party modules,
`proxy_lm` never imports `retriever`, `uprise.evaluation` imports nothing else of `uprise`, and
`serve` reaches `retriever` only through its public names. Read from the source with `ast`,
function-level imports included (a cycle hidden inside a function is still a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flan_data", "proxy_lm", "retriever", "serve", "uprise")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.module, [alias.name for alias in node.names]))
    return out


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, names in imports(path):
            for candidate in [target, *(f"{target}.{n}" for n in names)]:
                if candidate in modules and candidate != name:
                    edges[name].add(candidate)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def package_level(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges between modules, ignoring a package's `__init__` re-exports of its own modules."""
    return {v: {w for w in ws if not v.startswith(w + ".") and not w.startswith(v + ".")}
            for v, ws in edges.items()}


def test_no_import_cycles_between_modules():
    assert cycles(package_level(graph())) == []


def test_proxy_lm_never_imports_retriever():
    bad = {v: sorted(w for w in ws if w.split(".")[0] == "retriever")
           for v, ws in graph().items() if v.split(".")[0] == "proxy_lm"}
    assert {v: ws for v, ws in bad.items() if ws} == {}


def test_evaluation_depends_on_no_other_part_of_uprise():
    """`uprise.evaluation` sits below the dispatcher, the pipeline and the CLIs."""
    def inside(module: str) -> bool:
        return module == "uprise.evaluation" or module.startswith("uprise.evaluation.")

    edges = graph()
    bad = {v: sorted(w for w in ws if w.split(".")[0] == "uprise" and not inside(w))
           for v, ws in edges.items() if inside(v)}
    assert {v: ws for v, ws in bad.items() if ws} == {}
    assert "uprise.evaluation.run" in edges  # the rule is not vacuous


def test_serve_uses_only_retriever_s_public_names():
    import retriever

    public = set(retriever.__all__)
    reached = []
    for path in (ROOT / "serve").rglob("*.py"):
        for target, names in imports(path):
            if target.split(".")[0] != "retriever":
                continue
            if target != "retriever" or not set(names) <= public:
                reached.append(f"{path.relative_to(ROOT)}: from {target} import {names}")
    assert reached == []


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
