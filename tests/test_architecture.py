"""The package reads in pipeline order: no module imports from a layer above it, no import cycles,
no file over 600 lines. Checked over the source with `ast` (lazy and TYPE_CHECKING imports count:
they are dependencies all the same). docs/architecture.md explains the order."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "glmix_deploy"
MAX_LINES = 600

# Lowest first. A module may import from its own layer or any layer below it.
LAYERS = [
    ("foundation", ["glmix_deploy", "glmix_deploy.errors", "glmix_deploy.files", "glmix_deploy.dtypes"]),
    ("data", ["glmix_deploy.data"]),
    ("models", ["glmix_deploy.models"]),
    ("graph", ["glmix_deploy.graph"]),
    ("precision", ["glmix_deploy.precision"]),
    ("tensorrt", ["glmix_deploy.tensorrt"]),
    ("artifacts", ["glmix_deploy.artifacts"]),
    ("exporters", ["glmix_deploy.exporters"]),
    ("engines", ["glmix_deploy.engines"]),
    ("compare", ["glmix_deploy.compare"]),
    ("bench", ["glmix_deploy.bench"]),
    ("verify", ["glmix_deploy.verify"]),
    ("serve", ["glmix_deploy.serve"]),
    ("pipeline", ["glmix_deploy.pipeline"]),
    ("cli", ["glmix_deploy.cli"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact_root = prefix == "glmix_deploy" and module != "glmix_deploy"
            if exact_root:
                continue
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS and docs/architecture.md"
    return best


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """glmix_deploy modules imported anywhere in the file (`from pkg import mod` resolves to pkg.mod)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("glmix_deploy"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("glmix_deploy"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    found.discard(module)
    return found


def dependency_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: imports_of(p, m, set(files)) for m, p in files.items()}


def test_no_module_imports_from_a_layer_above_it():
    upward = []
    for module, deps in dependency_graph().items():
        for dep in deps:
            if layer_of(dep) > layer_of(module):
                upward.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = dependency_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_file_over_the_line_limit():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_the_checker_sees_an_upward_import(tmp_path):
    # The check must be able to fail: an engine module importing the CLI is reported.
    fake = tmp_path / "glmix_deploy" / "engines"
    fake.mkdir(parents=True)
    source = fake / "x.py"
    source.write_text("def f():\n    from glmix_deploy.cli import main\n")
    deps = imports_of(source, "glmix_deploy.engines.x", {"glmix_deploy.cli.main"})
    assert deps == {"glmix_deploy.cli.main"}
    assert layer_of("glmix_deploy.cli.main") > layer_of("glmix_deploy.engines.x")
