"""What `export` (and visualize, verify's reports) may write where: no file replaced that the user
did not ask to replace, output locations refused up front (exit 2, one line) when they cannot be
written, sizes the machine cannot hold refused with the limit, stale temporaries of a killed run
swept, written files with the usual mode; and the entry point's own behaviours (Ctrl-C, --version,
a missing checkpoint reported before the heavy imports)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import onnx
import pytest

from glmix_deploy.cli.main import run


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = run(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------- never replace unasked


@pytest.mark.parametrize("fmt, out_name, existing_name", [
    ("triton", "model_repository", "tiny.onnx"),  # the ONNX staged beside the repository
    ("trt", "m.engine", "m.onnx"),  # the ONNX an engine is built from
    ("trt", "m.onnx", "m.engine"),  # the engine built beside a named ONNX
    ("trt", "m.onnx", "m.engine.json"),  # ... and its sidecar
    ("openvino", "m.xml", "m.onnx"),  # the ONNX an IR is converted from
    ("openvino", "m.onnx", "m.bin"),  # the IR's weights beside a named ONNX
    ("onnx", None, "tiny.onnx"),  # a default output name: --out not given
])
def test_export_never_replaces_a_file_out_does_not_name(fmt, out_name, existing_name, tiny_ckpt: Path,
                                                        tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    existing = tmp_path / existing_name
    existing.write_bytes(b"the user's own file")
    args = ["export", "--ckpt", str(tiny_ckpt), "--fmt", fmt] + (["--out", out_name] if out_name else [])
    rc, _, err = _run(capsys, *args)
    line = _one_error_line(err)
    assert rc == 2 and existing_name in line and "--force" in line, line
    assert existing.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing_name]  # refused before any work


def test_triton_keeps_the_users_onnx_unless_forced(tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    """The issue's case: `make demo`'s --dynamic all ONNX beside the repository survives a triton
    export; with --force it is replaced by the batch-only one the repository serves."""
    out = tmp_path / "out"
    out.mkdir()
    onnx_file = out / "tiny.onnx"
    rc, _, err = _run(capsys, "export", "--ckpt", str(tiny_ckpt), "--dynamic", "all", "--out", str(onnx_file))
    assert rc == 0, err
    before = onnx_file.read_bytes()
    rc, _, err = _run(capsys, "export", "--ckpt", str(tiny_ckpt), "--fmt", "triton",
                      "--out", str(out / "model_repository"))
    assert rc == 2 and str(onnx_file) in _one_error_line(err)
    assert onnx_file.read_bytes() == before and not (out / "model_repository").exists()

    rc, _, err = _run(capsys, "export", "--ckpt", str(tiny_ckpt), "--fmt", "triton", "--force",
                      "--out", str(out / "model_repository"))
    assert rc == 0, err
    props = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert props["dynamic"] == "batch"
    assert (out / "model_repository" / "glnet" / "1" / "model.onnx").is_file()


def test_export_replaces_the_file_out_names(tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    """Naming a file with --out asks for it (README): a rerun replaces it, as `make demo` relies on."""
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    rc, _, err = _run(capsys, "export", "--ckpt", str(tiny_ckpt), "--out", str(target))
    assert rc == 0, err
    assert onnx.load(str(target)).graph.node
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# --------------------------------------------------------------------------- output locations


def _unwritable(tmp_path: Path) -> dict[str, Path]:
    """Folders that refuse new files even to root (chmod would not)."""
    regular = tmp_path / "a-file"
    regular.write_text("x")
    return {"proc": Path("/proc"), "sys": Path("/sys"), "parent is a file": regular,
            "missing": tmp_path / "missing"}


@pytest.mark.parametrize("where", ["proc", "sys", "parent is a file", "missing"])
@pytest.mark.parametrize("command", ["export", "triton", "visualize", "verify-report"])
def test_unwritable_output_locations_exit_2_before_any_work(command: str, where: str, tiny_ckpt: Path,
                                                            tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    folder = _unwritable(tmp_path)[where]
    ckpt = str(tiny_ckpt)
    args = {
        "export": ["export", "--ckpt", ckpt, "--out", str(folder / "x.onnx")],
        "triton": ["export", "--ckpt", ckpt, "--fmt", "triton", "--out", str(folder / "repo")],
        "visualize": ["visualize", "--ckpt", ckpt, "--image", str(tmp_path / "unused.png"),
                      "--out", str(folder / "x.png")],
        "verify-report": ["verify", "--ckpt", ckpt, "--model", str(tiny_onnx), "--report", str(folder / "r.json")],
    }[command]
    started = time.perf_counter()
    rc, _, err = _run(capsys, *args)
    line = _one_error_line(err)
    assert rc == 2 and str(folder) in line, line
    assert time.perf_counter() - started < 10  # refused up front, not after an export


def test_too_large_an_input_is_refused_with_the_limit(tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    rc, _, err = _run(capsys, "export", "--ckpt", str(tiny_ckpt), "--img-size", "100000",
                      "--out", str(tmp_path / "big.onnx"))
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    line = errors[0]
    assert rc == 2 and "1x3x100000x100000" in line and "GiB" in line and "available" in line, line
    assert list(tmp_path.iterdir()) == []


_STAGE_AND_DIE = """
import os, sys
from glmix_deploy.files import make_staging_dir
work = make_staging_dir(sys.argv[1])
(work / "raw.onnx").write_bytes(b"half")
print(work, flush=True)
if sys.argv[2] == "die":
    os._exit(9)  # like kill -9: no finally, no cleanup
sys.stdin.read()  # alive (holding the lock) until the test closes stdin
"""


@pytest.mark.cli
def test_next_export_sweeps_what_a_killed_one_left(tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "m.onnx"
    dead = subprocess.run([sys.executable, "-c", _STAGE_AND_DIE, str(target), "die"],
                          capture_output=True, text=True, timeout=60)
    stale = Path(dead.stdout.strip())
    alive = subprocess.Popen([sys.executable, "-c", _STAGE_AND_DIE, str(target), "live"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        in_use = Path(alive.stdout.readline().strip())
        user_file = tmp_path / ".m.onnx.abc123.tmp"  # looks like a temporary, but not one of ours
        user_file.write_text("mine")
        old = time.time() - 60  # past the grace a just-created temporary gets
        for path in (stale / ".lock", in_use / ".lock"):
            os.utime(path, (old, old))
        assert stale.is_dir() and in_use.is_dir()

        rc, _, err = _run(capsys, "export", "--ckpt", str(tiny_ckpt), "--out", str(target))
        assert rc == 0, err
        assert not stale.exists(), "the dead run's staging folder was left"
        assert in_use.is_dir(), "a live run's staging folder was swept"
        assert user_file.read_text() == "mine"
    finally:
        alive.stdin.close()
        alive.wait(timeout=60)


# --------------------------------------------------------------------------- files as written


def test_reports_get_the_mode_of_any_written_file(tiny_ckpt: Path, tiny_onnx: Path, tmp_path: Path,
                                                  capsys) -> None:
    previous = os.umask(0o022)
    try:
        report, junit = tmp_path / "r.json", tmp_path / "r.xml"
        rc, _, err = _run(capsys, "verify", "--ckpt", str(tiny_ckpt), "--model", str(tiny_onnx),
                          "--report", str(report), "--junit", str(junit))
        assert rc == 0, err
        assert {oct(p.stat().st_mode & 0o777) for p in (report, junit)} == {oct(0o644)}
    finally:
        os.umask(previous)


@pytest.mark.cli
def test_a_missing_checkpoint_is_reported_before_torch_is_imported(tmp_path: Path) -> None:
    probe = textwrap.dedent("""
        import sys
        from glmix_deploy.cli.main import run
        rc = run(["export", "--ckpt", sys.argv[1]])
        print(rc, "torch" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "missing.pth")],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "False"], proc.stdout + proc.stderr
    assert proc.stderr.strip() == f"error: checkpoint not found: {tmp_path / 'missing.pth'}"


def test_version_prints_the_version_and_exits_0(capsys) -> None:
    from glmix_deploy import __version__

    rc, out, err = _run(capsys, "--version")
    assert (rc, out.strip(), err) == (0, __version__, "")


# A real command line (glmix_deploy.cli.main.run) with one extra command that waits, so that the
# SIGINT lands while a command runs, as Ctrl-C does during a long export.
_WAITING_COMMAND = """
import sys, time
from glmix_deploy.cli.main import app, run

@app.command("wait-here")
def wait_here():
    print("waiting", flush=True)
    time.sleep(120)

sys.exit(run(["wait-here"]))
"""


@pytest.mark.cli
def test_ctrl_c_says_interrupted_and_exits_130() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _WAITING_COMMAND], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "waiting"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.strip() == "error: interrupted; no partial output was left behind", err


def test_inspect_json_lists_no_overrides_by_default(tiny_ckpt: Path, capsys) -> None:
    rc, out, _ = _run(capsys, "--json", "inspect", "--ckpt", str(tiny_ckpt))
    assert rc == 0 and json.loads(out)["overridden"] == {}
