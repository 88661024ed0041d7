"""The package's layout: the product core below, the benchmark wing on top, no import circle, small modules.

The import graph is read from the source (function bodies included), so a circle hidden inside a function, or a core
module reaching into `zoo/` or the bench, fails here before it confuses a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import k2v_hub

PACKAGE = Path(k2v_hub.__file__).parent
# The benchmark wing and the entry points sit on top of the core: they may import it, never the reverse.
WING = ("k2v_hub.zoo", "k2v_hub.bench", "k2v_hub.demo", "k2v_hub.cli", "k2v_hub.app", "k2v_hub.testing")
MAX_LINES = 800
MAX_BENCH_LINES = 320
LONG_ON_PURPOSE = {"k2v_hub.testing.hub_server"}  # a whole Hub-compatible test server, not product code
# huggingface_hub names that talk to the Hub; only hub.py may import them.
HUB_CALLS = {"snapshot_download", "hf_hub_download", "HfApi", "upload_folder", "create_repo", "list_models",
             "InferenceClient", "upload_file", "create_commit"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _imports(name: str, modules: dict[str, Path]) -> set[str]:
    """Every in-package module `name` imports, wherever the import statement stands."""
    tree = ast.parse(modules[name].read_text())
    here = name if _is_package(name, modules) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t.startswith("k2v_hub") and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    # A package's __init__ is a facade (lazy re-exports); edges out of it are not part of the layering.
    return {m: (set() if _is_package(m, modules) else _imports(m, modules)) for m in modules}


def _in_wing(name: str) -> bool:
    return any(name == w or name.startswith(w + ".") for w in WING)


def test_core_never_imports_the_benchmark_wing():
    graph = _graph()
    bad = sorted(f"{m} -> {t}" for m, ts in graph.items() if not _in_wing(m) for t in ts if _in_wing(t))
    assert bad == [], "core modules import the benchmark wing:\n" + "\n".join(bad)


def test_zoo_does_not_import_the_bench():
    graph = _graph()
    bad = sorted(f"{m} -> {t}" for m, ts in graph.items() if m.startswith("k2v_hub.zoo") for t in ts
                 if t.startswith("k2v_hub.bench") or t in ("k2v_hub.cli", "k2v_hub.demo"))
    assert bad == [], "\n".join(bad)


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                circles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert circles == [], "import circles:\n" + "\n".join(circles)


def test_modules_stay_small():
    long = []
    for name, path in _modules().items():
        n = len(path.read_text().splitlines())
        limit = MAX_BENCH_LINES if name.startswith("k2v_hub.bench") else MAX_LINES
        if n > limit and name not in LONG_ON_PURPOSE:
            long.append(f"{name}: {n} lines (limit {limit})")
    assert long == [], "\n".join(long)


def test_every_hub_call_goes_through_hub_py():
    offenders = []
    for name, path in _modules().items():
        if name in ("k2v_hub.hub",) or name.startswith("k2v_hub.testing"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("huggingface_hub"):
                offenders += [f"{name}: {a.name}" for a in node.names if a.name in HUB_CALLS]
    assert offenders == [], "Hub calls outside k2v_hub/hub.py:\n" + "\n".join(offenders)


def test_graph_sees_imports_inside_functions(tmp_path):
    """The walker is what the other tests rely on: an import hidden in a function body is an edge."""
    modules = {"k2v_hub.a": tmp_path / "a.py", "k2v_hub.b": tmp_path / "b.py"}
    modules["k2v_hub.a"].write_text("def f():\n    from .b import g\n    return g\n")
    modules["k2v_hub.b"].write_text("x = 1\n")
    assert _imports("k2v_hub.a", modules) == {"k2v_hub.b"}
