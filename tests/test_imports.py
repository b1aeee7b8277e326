"""The packages' shape: no import cycle (function-level imports count), the library (dannlib) importing nothing of the
study (dann_study), no module over 450 lines, the library within 5,000 lines, imports in isort order."""
import ast
import io
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dannlib", "dann_study")
PACKAGE = ROOT / "dannlib"


def _modules() -> dict[str, Path]:
    out = {}
    for path in (p for package in PACKAGES for p in (ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules (dannlib, dann_study) it imports anywhere in its body (relative imports
    resolved)."""
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(kept + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_library_imports_nothing_of_the_study():
    """dannlib is what a user reuses on their own data: it names no notebook's plan, grid or table."""
    graph = import_graph()
    assert any(m.startswith("dann_study") for m in graph["dann_study.plan"])  # the graph sees across packages
    leaks = {m: sorted(t for t in targets if t.split(".")[0] == "dann_study")
             for m, targets in graph.items() if m.split(".")[0] == "dannlib"}
    assert {m: t for m, t in leaks.items() if t} == {}


def test_no_module_over_450_lines():
    long = {str(p.relative_to(ROOT)): n for package in PACKAGES for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 450}
    assert long == {}


def test_the_library_is_within_5000_lines():
    """Issue 23's budget for dannlib (``find dannlib -name '*.py' | xargs cat | wc -l``): study code goes to
    dann_study, and the library grows only by what a user of it needs."""
    assert sum(len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")) <= 5000


def _joined_imports(source: str) -> str:
    """``source`` with every parenthesised ``from ... import (...)`` on one line (its comments at the end): this code
    base wraps them aligned under the parenthesis, a style ruff's isort does not write, so the order is checked on
    this form."""
    lines = source.splitlines(keepends=True)
    comments: dict[int, list[str]] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments.setdefault(tok.start[0], []).append(tok.string)
    wrapped = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) and n.end_lineno > n.lineno]
    for node in sorted(wrapped, key=lambda n: -n.lineno):
        names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
        found = [c for line in range(node.lineno, node.end_lineno + 1) for c in comments.get(line, [])]
        lines[node.lineno - 1:node.end_lineno] = [
            f"{lines[node.lineno - 1][:node.col_offset]}from {'.' * node.level}{node.module or ''} import {names}"
            + "".join(f"  {c}" for c in found) + "\n"]
    return "".join(lines)


def test_imports_are_in_isort_order(tmp_path):
    """ruff's isort rule (I001: sections, then alphabetical) on a copy of dannlib/, dann_study/, benchmarks/ and tests/
    whose wrapped imports are joined (:func:`_joined_imports`); first-party: the project and tests/ (pyproject's
    ruff ``src``)."""
    root = ROOT
    for path in [p for folder in (*PACKAGES, "benchmarks", "tests") for p in (root / folder).rglob("*.py")]:
        copy = tmp_path / path.relative_to(root)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(_joined_imports(path.read_text()))
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "I", "--line-length", "1000",
                          "--config", f"src = [{str(tmp_path)!r}, {str(tmp_path / 'tests')!r}]", "--output-format",
                          "concise", "."], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, f"imports out of isort order (fix: sort them, keep the wrapping):\n{out.stdout}"


def test_the_order_check_finds_a_misordered_block(tmp_path):
    (tmp_path / "m.py").write_text("import sys\nimport os\n")
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "I", "m.py"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 1 and "I001" in out.stdout
