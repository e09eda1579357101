"""The package reads in pipeline order: no module imports from a layer above it, no import cycles,
no file over 600 lines. Checked over the source with `ast` (lazy and TYPE_CHECKING imports count:
they are dependencies all the same). docs/architecture.md explains the order."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "glmix_deploy"
MAX_LINES = 600

# Lowest first. A module may import from its own layer or any layer below it.
LAYERS = [
    ("foundation", ["glmix_deploy", "glmix_deploy.errors", "glmix_deploy.files", "glmix_deploy.dtypes",
                    "glmix_deploy.option_rules", "glmix_deploy.progress"]),
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


# --------------------------------------------------------------------------------------------------
# Library errors and progress lines name fields, not flags: `calib_size` in backquotes, which the
# CLI shows as --calib-size (cli.params.flags_in, also for progress lines). A `glmix-deploy ...`
# command line quoted as advice ("rebuild with `glmix-deploy export --fmt trt`") is a command to run, not an option.
_FLAG = re.compile(r"(?<![\w`-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)(?![\w=-])")
_COMMAND_LINE = re.compile(r"`?glmix-deploy [a-z][^`)]*`?")


def _cli_flags() -> set[str]:
    import typer

    from glmix_deploy.cli.main import app
    from glmix_deploy.cli.params import option_flags

    return set(option_flags(typer.main.get_command(app)).values())


def _is_message(node: ast.AST) -> bool:
    """A raise, or a call that hands a line to the user: say(...), progress(...), notes.append(...)."""
    if isinstance(node, ast.Raise):
        return True
    func = node.func
    if isinstance(func, ast.Name):
        return func.id in ("say", "progress", "note")
    return (isinstance(func, ast.Attribute) and func.attr == "append" and isinstance(func.value, ast.Attribute)
            and func.value.attr == "notes")


def flags_named_in_errors(path: Path, flags: set[str]) -> list[str]:
    """`line: text` of each string in a raise statement, or flag-valued constant (an option name
    handed to a message), that names one of our command line's flags (or composes one: "--" + ...)."""
    tree = ast.parse(path.read_text(), str(path))
    in_raise = {id(n) for node in ast.walk(tree) if isinstance(node, (ast.Raise, ast.Call)) and _is_message(node)
                for n in ast.walk(node)}
    in_list = {id(n) for node in ast.walk(tree) if isinstance(node, ast.List) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        text = _COMMAND_LINE.sub("", node.value)
        named = {f"--{m}" for m in _FLAG.findall(text)} & flags
        message = id(node) in in_raise
        option_name = id(node) not in in_list and text in flags  # e.g. option="--calib"
        composed = message and re.search(r"(?<![\w-])--$", text)  # f"--{key}-shape"
        if (named and (message or option_name)) or composed:
            where = path.relative_to(PACKAGE.parent) if path.is_relative_to(PACKAGE) else path.name
            found.append(f"{where}:{node.lineno}: {node.value!r}")
    return found


def test_no_library_error_names_a_command_line_flag():
    flags = _cli_flags()
    found = [hit for p in sorted(PACKAGE.rglob("*.py")) if "cli" not in p.relative_to(PACKAGE).parts
             for hit in flags_named_in_errors(p, flags)]
    assert not found, "library errors naming --flags (write `field`; the CLI shows the flag):\n" + "\n".join(found)


def test_the_flag_check_sees_a_flag_in_an_error(tmp_path):
    source = tmp_path / "x.py"
    source.write_text('def f(n, key):\n'
                      '    if n:\n'
                      '        raise ValueError(f"--calib-size must be >= 1, not {n}")\n'
                      '    raise ValueError(f"--{key}-shape is wrong")\n'
                      'OPTION = "--holdout"\n'
                      'COMMAND = ["trtexec", "--workspace"]  # another program\'s command line\n'
                      'def g():\n'
                      '    raise ValueError("`calib_size` must be >= 1; run `glmix-deploy export --fmt trt`")\n')
    hits = flags_named_in_errors(source, {"--calib-size", "--holdout", "--workspace", "--fmt"})
    assert sorted(h.split(":")[1] for h in hits) == ["3", "4", "5"]


def test_the_flag_check_sees_progress_lines_and_notes(tmp_path):
    source = tmp_path / "x.py"
    source.write_text('def f(say, report):\n    say("judged on images (no --holdout)")\n'
                      '    report.notes.append("fewer --threads help")\n    log("--threads is fine in a log")\n')
    found = flags_named_in_errors(source, {"--holdout", "--threads"})
    assert [hit.split(":")[1] for hit in found] == ["2", "3"]
