"""The house rules of the source tree, checked on the code itself (see issue 12):

(a) no import cycle between first-party modules (edge, camera, provisioning);
(b) no function-level import of a first-party module in edge/, camera/, provisioning/; a
    function-level import of a third-party module carries a one-line reason (a comment on the same
    line or on the line above);
(c) no .py file in edge/, camera/, provisioning/, tests/, bench/, tools/ over 400 lines, except the
    vendored protos under edge/serving/protos/;
(d) no module under tests/ imports a test module (`tests.**.test_*`): fixtures come from the plugins
    in tests/fixtures/, helpers from tests/support/;
(e) docs/architecture.md names every module of edge/ and camera/ in its folder's row of the Packages
    table (a module directly in edge/, such as edge/errors.py, anywhere as `edge.<name>`).

Each failure names the modules, files and lines at fault.
"""
from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path

import grimp

from tests.support.paths import REPO

FIRST_PARTY = ("edge", "camera", "provisioning")
SIZE_CHECKED = ("edge", "camera", "provisioning", "tests", "bench", "tools")
VENDORED = (REPO / "edge" / "serving" / "protos",)
MAX_LINES = 400


def python_files(*tops: str) -> Iterator[Path]:
    for top in tops:
        for path in sorted((REPO / top).rglob("*.py")):
            if not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(REPO).parts):
                yield path


# ------------------------------------------------------------------------------------- (a) cycles

def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the graph is a few hundred modules deep at most)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                found.append(sorted(component))
    return found


def test_scc_finder_finds_cycles_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e", "d"}}
    assert sorted(c for c in strongly_connected_components(graph) if len(c) > 1) == [["a", "b", "c"]]


def test_no_import_cycles_between_first_party_modules() -> None:
    graph = grimp.build_graph(*FIRST_PARTY, cache_dir=None)
    edges = {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}
    cycles = [c for c in strongly_connected_components(edges) if len(c) > 1]
    report = []
    for cycle in cycles:
        members = set(cycle)
        imports = sorted(f"{a} -> {b}" for a in cycle for b in edges[a] if b in members)
        report.append(f"cycle of {len(cycle)} modules: {', '.join(cycle)}\n    " + "\n    ".join(imports))
    assert not cycles, "import cycles between first-party modules:\n" + "\n".join(report)


# ------------------------------------------------------------------------------------- (b) function-level imports

def imported_top_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return ["." if node.level else (node.module or "").split(".")[0]]
    return [alias.name.split(".")[0] for alias in node.names]


def function_level_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements anywhere inside a function or method body."""
    def visit(node: ast.AST, in_function: bool) -> Iterator[ast.Import | ast.ImportFrom]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                yield child
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from visit(child, inside)

    yield from visit(tree, False)


def comment_lines(source: str) -> dict[int, str]:
    """{line number: comment text} for every comment in `source`."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string
    return found


DIRECTIVES = ("noqa", "type:", "pragma", "pylint:", "fmt:", "isort:", "mypy:")


def reason_in(comment: str) -> str:
    """The words of a comment that are not tool directives (`# noqa: F401` gives no reason)."""
    parts = [part.strip() for part in comment.split("#")]
    return " ".join(p for p in parts if p and not p.lower().startswith(DIRECTIVES))


def has_reason(node: ast.stmt, comments: dict[int, str], lines: list[str]) -> bool:
    """A comment (not just a tool directive) on one of the statement's lines, or on a comment-only line
    right above it."""
    end = node.end_lineno or node.lineno
    if any(reason_in(comments.get(n, "")) for n in range(node.lineno, end + 1)):
        return True
    above = node.lineno - 1
    return above >= 1 and lines[above - 1].lstrip().startswith("#") and bool(reason_in(comments.get(above, "")))


def import_violations(path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, str(path))
    comments = comment_lines(source)
    lines = source.splitlines()
    where = path.relative_to(REPO)
    out = []
    for node in function_level_imports(tree):
        names = imported_top_names(node)
        text = lines[node.lineno - 1].strip()
        if any(name == "." or name in FIRST_PARTY for name in names):
            out.append(f"{where}:{node.lineno}: first-party import inside a function: {text}")
        elif any(name not in sys.stdlib_module_names for name in names) and not has_reason(node, comments, lines):
            out.append(f"{where}:{node.lineno}: third-party import inside a function without a one-line reason: {text}")
    return out


def test_the_import_rule_checker_tells_the_cases_apart() -> None:
    source = (
        "import json\n"
        "def f():\n"
        "    import edge.errors\n"
        "    from . import sibling\n"
        "    import numpy\n"
        "    import tensorflow  # heavy: only the embedded backend needs it\n"
        "    # LiteRT is optional\n"
        "    import ai_edge_litert\n"
        "    import json\n"
        "    import grpc_tools  # noqa: F401\n"
        "    import systemd  # type: ignore[import]  # optional, untyped\n"
        "class C:\n"
        "    def m(self):\n"
        "        from camera import Frame\n"
    )
    tree = ast.parse(source)
    found = [(n.lineno, imported_top_names(n)) for n in function_level_imports(tree)]
    assert found == [(3, ["edge"]), (4, ["."]), (5, ["numpy"]), (6, ["tensorflow"]), (8, ["ai_edge_litert"]),
                     (9, ["json"]), (10, ["grpc_tools"]), (11, ["systemd"]), (14, ["camera"])]
    comments, lines = comment_lines(source), source.splitlines()
    reasons = {n.lineno: has_reason(n, comments, lines) for n in function_level_imports(tree)}
    assert (reasons[5], reasons[6], reasons[8], reasons[10], reasons[11]) == (False, True, True, False, True)


def test_no_function_level_first_party_imports_and_third_party_ones_say_why() -> None:
    violations = [v for path in python_files(*FIRST_PARTY) for v in import_violations(path)]
    assert not violations, f"{len(violations)} function-level import(s) break the rule:\n" + "\n".join(violations)


# ------------------------------------------------------------------------------------- (c) file sizes

def test_no_python_file_over_400_lines() -> None:
    too_long = []
    for path in python_files(*SIZE_CHECKED):
        if any(path.is_relative_to(v) for v in VENDORED):
            continue
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > MAX_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {count} lines")
    assert not too_long, f"files over {MAX_LINES} lines (split them by topic):\n" + "\n".join(too_long)


# ------------------------------------------------------------------------------------- (d) tests import no tests

def imports_of_test_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) for every import of a `tests.**.test_*` module."""
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "tests" and any(part.startswith("test_") for part in parts[1:]):
                yield node.lineno, name
                break


def test_no_test_module_imports_another() -> None:
    found = []
    for path in python_files("tests"):
        for line, module in imports_of_test_modules(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            found.append(f"{path.relative_to(REPO)}:{line}: imports {module}")
    assert not found, ("test modules import other test modules (move what they share to tests/support/, "
                       "fixtures to tests/fixtures/):\n" + "\n".join(found))


# ------------------------------------------------------------------------------------- (e) the map names every module

def package_rows(text: str) -> dict[str, str]:
    """docs/architecture.md's Packages table: folder (`edge/app/`) -> what its row says."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `([a-z_/]+/)` \| (.*) \|$", text, re.MULTILINE)}


def test_the_architecture_map_names_every_module() -> None:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = package_rows(text)
    missing = []
    for path in python_files("edge", "camera"):
        relative = path.relative_to(REPO)
        if path.name == "__init__.py" or any(path.is_relative_to(v) for v in VENDORED):
            continue
        if len(relative.parts) == 2 and relative.parts[0] == "edge":  # edge/errors.py
            if f"edge.{path.stem}" not in text:
                missing.append(f"{relative}: `edge.{path.stem}` is not mentioned")
            continue
        folder = f"{relative.parts[0]}/" if relative.parts[0] == "camera" else f"{'/'.join(relative.parts[:2])}/"
        if not re.search(rf"\b{re.escape(path.stem)}\b", rows.get(folder, "")):
            missing.append(f"{relative}: not named in the `{folder}` row")
    assert not missing, "docs/architecture.md (Packages) does not name:\n" + "\n".join(missing)

