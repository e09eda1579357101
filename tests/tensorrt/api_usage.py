"""Which TensorRT names our code uses, read from its source (AST), and which names a TensorRT
bindings wheel defines, read from its compiled module without importing it (the libraries it
loads are not installable here).

Our code binds the tensorrt module to `trt` (or `self._trt`). A name is "used" when it is an
attribute read from that module or from anything obtained from it (`builder = trt.Builder(...)`,
then `builder.create_network`, `self.engine.get_tensor_name`, ...), or a string literal given to
getattr on such an object. pybind11 registers every class, method, property and enum member name
as a C string, so a defined name ends in a NUL in the module's bytes: either as a whole string
or as the tail of a longer one, where the linker merged it (`Builder` inside `IBuilder`).
"""
from __future__ import annotations

import ast
from pathlib import Path

MODULE_NAMES = {"trt", "self._trt"}


def _root(expr) -> str | None:
    while True:
        if isinstance(expr, ast.Attribute):
            if isinstance(expr.value, ast.Name) and expr.value.id == "self":
                return f"self.{expr.attr}"
            expr = expr.value
        elif isinstance(expr, (ast.Call,)):
            expr = expr.func
        elif isinstance(expr, ast.Subscript):
            expr = expr.value
        elif isinstance(expr, ast.Name):
            return expr.id
        else:
            return None


def _target_keys(target) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
        return [f"self.{target.attr}"]
    return []


def used_names(source: str) -> dict[str, int]:
    """{TensorRT attribute name: first line} for every attribute read from the tensorrt module or
    from an object obtained from it."""
    tree = ast.parse(source)
    tainted = set(MODULE_NAMES)
    assigns = [n for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))]
    changed = True
    while changed:
        changed = False
        for node in assigns:
            if node.value is None or _root(node.value) not in tainted:
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for key in _target_keys(t):
                    if key not in tainted:
                        tainted.add(key)
                        changed = True
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _root(node.value) in tainted:
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                continue  # self.engine itself is ours
            found.setdefault(node.attr, node.lineno)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and len(node.args) >= 2 and _root(node.args[0]) in tainted
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            found.setdefault(node.args[1].value, node.lineno)
    return found


def used_in(paths) -> dict[str, str]:
    """{name: 'file:line' of its first use} over several source files."""
    found: dict[str, str] = {}
    for path in paths:
        for name, line in used_names(Path(path).read_text()).items():
            found.setdefault(name, f"{Path(path).name}:{line}")
    return found


def wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def defined_names(wheel: Path) -> bytes:
    """The compiled module's bytes, followed by the names the package's Python files define
    (`__version__` is set in its __init__.py), each NUL-terminated. Read from the wheel, never
    imported."""
    import warnings
    import zipfile

    with zipfile.ZipFile(wheel) as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NVIDIA's sources have invalid escapes; only names matter
        module = next(n for n in archive.namelist() if n.endswith("/tensorrt.so"))
        python_defined: set[str] = set()
        for name in archive.namelist():
            if name.endswith(".py"):
                for node in ast.walk(ast.parse(archive.read(name))):
                    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                        python_defined.add(node.name)
                    elif isinstance(node, ast.Assign):
                        python_defined.update(t.id for t in node.targets if isinstance(t, ast.Name))
        return archive.read(module) + b"\0" + b"".join(n.encode() + b"\0" for n in sorted(python_defined))


def defines(module_bytes: bytes, name: str) -> bool:
    """Whether `name` ends a C string in the module: as a whole string or the tail of an identifier."""
    needle = name.encode() + b"\0"
    start = module_bytes.find(needle)
    while start != -1:
        before = module_bytes[start - 1:start] if start else b"\0"
        if before == b"\0" or before.isalnum() or before == b"_":
            return True
        start = module_bytes.find(needle, start + 1)
    return False
