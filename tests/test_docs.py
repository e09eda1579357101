"""Every code block in README.md, docs/*.md and samples/README.md is checked, so the docs cannot
drift from the code:

- python blocks run, each in a fresh folder holding what the docs name (`samples/`, `x.pth`, the
  sample's ONNX in `out/`, a Triton model folder, `cat.jpg`, ...);
- every `glmix-deploy` command (bash blocks and usage text without a language) names a command and
  options the CLI has (the options its `--help` lists); concrete ones run through the CLI (slow);
- yaml blocks are read as --model-config files;
- dotted names (`glmix_deploy.data.preprocess`) and repository paths in the text exist.

A block that cannot run here is marked in the markdown with `<!-- not-run: the reason -->` on the line
before it; its glmix-deploy commands are still checked and its Python imports must resolve.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "samples" / "README.md"]
SAMPLE = ROOT / "samples" / "glnet_digits.pth"
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.+?)\s*-->")
FENCE = re.compile(r"^```(\S*)\s*$")
GLOBAL_OPTIONS = ("--json", "--debug", "--version", "--help")
INPUT_OPTIONS = ("--ckpt", "--model", "--image", "--images", "--calib", "--holdout", "--model-config", "--baseline")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    not_run: str | None  # the reason given in the markdown

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def read_blocks(doc: Path) -> list[Block]:
    lines = doc.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start = i
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.search(previous)
        blocks.append(Block(doc, start + 1, match.group(1).lower(), "\n".join(lines[start + 1:i]),
                            marker.group(1) if marker else None))
        i += 1
    return blocks


BLOCKS = [b for doc in DOCS for b in read_blocks(doc)]


def blocks_of(*langs: str) -> list:
    return [pytest.param(b, id=b.where) for b in BLOCKS if b.lang in langs]


# ------------------------------------------------------------------------------- shell commands


def shell_commands(block: Block) -> list[str]:
    """Commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    text = re.sub(r"\\\n\s*", " ", block.text)
    commands, pending = [], ""
    for line in text.splitlines():
        pending += line + "\n"
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quoted string goes on over the next line
            continue
        pending = ""
        if words:
            commands.append(shlex.join(words))
    assert not pending, f"{block.where}: unterminated quote"
    return commands


def usage_commands(block: Block) -> list[str]:
    """`glmix-deploy ...` lines of usage text or a transcript (`$ glmix-deploy ...`), with their
    indented continuation lines; trailing `# comments` dropped."""
    commands: list[str] = []
    current: str | None = None
    for line in block.text.splitlines():
        line = re.sub(r"\s+#.*$", "", line)
        stripped = line.removeprefix("$ ")
        if current is not None and line[:1].isspace() and line.strip():
            current += " " + line.strip()
            continue
        if current is not None:
            commands.append(current)
        current = stripped if stripped.startswith("glmix-deploy ") else None  # other lines end a command
    return commands + ([current] if current is not None else [])


def cli_commands() -> list:
    found = []
    for block in BLOCKS:
        if block.lang in ("bash", "sh", "shell"):
            commands = [c for c in shell_commands(block) if c.startswith("glmix-deploy ")]
        elif block.lang in ("", "text", "console"):
            commands = usage_commands(block)
        else:
            continue
        found += [pytest.param(block, c, id=f"{block.where}:{c[:40]}") for c in commands]
    return found


def click_commands() -> dict:
    import typer

    from glmix_deploy.cli.main import app

    return typer.main.get_command(app).commands


def options_of(command) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | {"--help"}


def split_command(text: str) -> tuple[str, list[str]]:
    """(subcommand, options named) of a `glmix-deploy ...` line."""
    words = text.split()[1:]
    while words and words[0] in GLOBAL_OPTIONS:
        words.pop(0)
    named = re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", " ".join(words[1:]))
    return (words[0] if words else ""), named


@pytest.mark.parametrize("block, command", cli_commands())
def test_documented_commands_and_options_exist(block, command):
    name, options = split_command(command)
    commands = click_commands()
    assert name in commands, f"{block.where}: glmix-deploy has no command {name!r} ({command})"
    unknown = sorted(set(options) - options_of(commands[name]) - set(GLOBAL_OPTIONS))
    assert not unknown, f"{block.where}: `glmix-deploy {name}` has no option {', '.join(unknown)}"


@pytest.mark.parametrize("block", blocks_of("bash", "sh", "shell"))
def test_shell_blocks_run_only_glmix_deploy_or_are_marked(block):
    """A shell block that would run anything but glmix-deploy must say why it is not run here."""
    others = [c for c in shell_commands(block) if not c.startswith("glmix-deploy ")]
    assert block.not_run or not others, (
        f"{block.where}: {others[0]!r} cannot run in the tests; mark the block `<!-- not-run: reason -->`")


def test_every_block_has_a_checker():
    checked = {"python", "bash", "sh", "shell", "", "text", "console", "yaml"}
    unknown = [b.where for b in BLOCKS if b.lang not in checked and not b.not_run]
    assert not unknown, f"code blocks of a language this test does not check: {unknown}"
    assert len(BLOCKS) > 20 and any(b.not_run for b in BLOCKS)  # the docs were found and parsed


def test_the_checker_sees_a_wrong_option():
    wrong = Block(ROOT / "README.md", 1, "", "glmix-deploy bench --ckpt x.pth\n    [--max-ratoi R]", None)
    name, options = split_command(usage_commands(wrong)[0])
    assert name == "bench" and "--max-ratoi" in options
    assert "--max-ratoi" not in options_of(click_commands()["bench"])


# ------------------------------------------------------------------------------- python blocks


@pytest.fixture(scope="module")
def sample_onnx(tmp_path_factory) -> Path:
    """The bundled sample exported as `make demo` does (dynamic batch up to 8)."""
    from glmix_deploy.exporters.onnx_export import ExportOptions
    from glmix_deploy.models.loader import load_checkpoint
    from glmix_deploy.pipeline.export import export_onnx

    out = tmp_path_factory.mktemp("docs_sample") / "glnet_digits.onnx"
    export_onnx(load_checkpoint(SAMPLE), out, ExportOptions(dynamic="batch", max_batch=8))
    return out


def stand_in_engine(folder: Path, onnx_path: Path) -> Path:
    """`glnet.engine` with the sidecar a TensorRT build of `onnx_path` writes (batch 1..32). The plan
    bytes are a stand-in: only the sidecar is read by what the docs call (no TensorRT here)."""
    from glmix_deploy.graph.onnx_io import TensorSpec, load_model, read_metadata
    from glmix_deploy.tensorrt.profiles import Profile
    from glmix_deploy.tensorrt.sidecar import sidecar_content, write_sidecar

    engine = folder / "glnet.engine"
    engine.write_bytes(b"stand-in plan")
    content = sidecar_content(
        engine=engine, onnx_path=onnx_path, onnx_sha256="00" * 32,
        onnx_metadata=read_metadata(load_model(onnx_path, load_external_data=False)), tensorrt_version="10.12.0.36",
        gpu=None, precision="fp32", profiles=[Profile("images", (1, 3, 64, 64), (8, 3, 64, 64), (32, 3, 64, 64))],
        inputs=[TensorSpec("images", (None, 3, 64, 64), "float32")],
        outputs=[TensorSpec("logits", (None, 10), "float32")], backend="python", workspace_gib=1.0,
        builder_level=3, timing_cache=None, build_seconds=1.0)
    write_sidecar(engine, content)
    return engine


@pytest.fixture
def docs_folder(tmp_path, sample_onnx, monkeypatch) -> Path:
    """A fresh working folder with the files the docs' examples name (a Triton model folder is added
    for the blocks that read one: others write their own repository)."""
    from PIL import Image

    (tmp_path / "samples").symlink_to(ROOT / "samples")
    (tmp_path / "x.pth").symlink_to(SAMPLE)
    (tmp_path / "out").mkdir()
    shutil.copyfile(sample_onnx, tmp_path / "out" / "glnet_digits.onnx")
    shutil.copyfile(ROOT / "samples" / "digits" / "labels.txt", tmp_path / "labels.txt")
    stand_in_engine(tmp_path, sample_onnx)
    digits = sorted((ROOT / "samples" / "digits" / "val").glob("*/*.png"))
    with Image.open(digits[0]) as img:
        img.convert("RGB").save(tmp_path / "cat.jpg")
    shutil.copyfile(digits[-1], tmp_path / "dog.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def glmix_imports(code: str) -> list[tuple[str, str | None]]:
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("glmix_deploy"):
            found += [(node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.startswith("glmix_deploy")]
    return found


@pytest.mark.parametrize("block", blocks_of("python"))
def test_python_block_imports_resolve(block):
    """Also for blocks that cannot run here: what they import exists."""
    for module, name in glmix_imports(block.text):
        imported = importlib.import_module(module)
        assert name is None or hasattr(imported, name), f"{block.where}: {module} has no {name}"


@pytest.mark.parametrize("block", [p for p in blocks_of("python") if not p.values[0].not_run])
def test_python_block_runs(block, docs_folder):
    if "model_repository/glnet" in block.text:  # a model folder `export --fmt triton` wrote
        (docs_folder / "model_repository" / "glnet" / "1").mkdir(parents=True)
        shutil.copyfile(docs_folder / "out" / "glnet_digits.onnx",
                        docs_folder / "model_repository" / "glnet" / "1" / "model.onnx")
    exec(compile(block.text, block.where, "exec"), {"__name__": "__docs__"})


# ------------------------------------------------------------------------------- the rest


@pytest.mark.parametrize("block", blocks_of("yaml"))
def test_yaml_blocks_are_model_config_files(block, tmp_path):
    from glmix_deploy.models.model_config import read_model_config

    path = tmp_path / "model.yaml"
    path.write_text(block.text)
    assert read_model_config(path)


def test_named_modules_and_files_exist():
    missing = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for dotted in sorted(set(re.findall(r"\bglmix_deploy(?:\.[A-Za-z_]\w*)+", text))):
            if not _resolves(dotted):
                missing.append(f"{doc.name}: {dotted}")
        for path in sorted(set(re.findall(r"\b(?:glmix_deploy|tests|benchmarks|samples|docs)/[\w/.-]*\w", text))):
            if not (ROOT / path).exists():
                missing.append(f"{doc.name}: {path}")
    assert not missing, "the docs name what does not exist:\n" + "\n".join(missing)


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


# ------------------------------------------------------------------------------- running commands


def runnable_commands() -> list:
    """Concrete glmix-deploy commands (no [optional] or a|b placeholders) of blocks not marked."""
    found = []
    for block in BLOCKS:
        if block.lang not in ("bash", "sh", "shell") or block.not_run:
            continue
        for command in shell_commands(block):
            if command.startswith("glmix-deploy ") and not re.search(r"[\[|]|\.\.\.", command):
                found.append(pytest.param(block, command, id=f"{block.where}:{command[:40]}"))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("block, command", runnable_commands())
def test_concrete_commands_run(block, command, docs_folder, capsys):
    from glmix_deploy.cli.main import run

    words = shlex.split(command)
    inputs = [w for opt, w in zip(words, words[1:]) if opt in INPUT_OPTIONS]
    missing = [w for w in inputs if not (docs_folder / w).exists()]
    assert not missing, (f"{block.where}: {command!r} reads {', '.join(missing)}, which the docs' folder does not "
                         "hold (x.pth is the sample, out/glnet_digits.onnx its export): mark the block "
                         "`<!-- not-run: reason -->` or use those names")
    assert run(words[1:]) == 0, f"{block.where}: {command}\n{capsys.readouterr().err}"

