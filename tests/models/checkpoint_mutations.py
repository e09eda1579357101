"""Seeded mutations of real checkpoint files, and a contained runner that sorts their outcomes.

Shared by tests/models/test_checkpoint_fuzz.py (our reader must end every case in success or a
CheckpointError) and benchmarks/checkpoint_fuzz.py (ours against torch's weights_only loader).

Case ``i`` of a run is a pure function of (seed, counts, i), so a failure replays alone:
``python -m tests.models.checkpoint_mutations --replay SEED I [READER [COUNTS_JSON]]``.

Base files: a tiny random GLNet saved in the official training layout (model / optimizer /
epoch / scaler / an ``args`` object whose class is gone when the file is read), part of its
weights in the legacy (pre-1.6) torch format, and as safetensors. Mutations, one to three per
case: bit flips, truncations, insertions, deletions, byte-range overwrites, copies of a slice of
the file elsewhere, and "interesting" integers (0, 2**31, 2**32-1, 2**40, ...) written over 1-8
bytes, i.e. over size and count fields. They hit ``data.pkl`` (then re-zipped around the real
tensor members) or the raw bytes of a file; in a zip most raw positions fall in the local
headers, the central directory and its end record, where the sizes live.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import resource
import signal
import subprocess
import sys
import time
import traceback
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DEFAULT_COUNTS = {"pkl": 1300, "zip": 800, "legacy": 150, "safetensors": 250}
ADDRESS_SPACE_CAP = 3 << 30  # a regression fails the run, not the machine
_INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                0x3FFFFFFF, 1 << 20, 1 << 30, 1 << 40, (1 << 63) - 1, (1 << 64) - 1)


# --------------------------------------------------------------------------- base files


def make_bases(root: Path) -> dict[str, Path]:
    """The base files, written under `root` (a tiny GLNet: a case costs milliseconds)."""
    import torch
    from safetensors.torch import save_file

    from tests.factory import TINY, random_glnet, save_training_checkpoint

    config = dataclasses.replace(TINY, dims=(32, 32, 64, 64), mlp_ratios=(1, 1, 1, 1),
                                 num_slots=4, num_classes=4, img_size=32)
    model = random_glnet(config)
    root.mkdir(parents=True, exist_ok=True)
    train = save_training_checkpoint(root / "train.pth", model, root)
    weights = {k: v.clone() for k, v in list(model.state_dict().items())[:24]}
    legacy = root / "legacy.pth"
    torch.save({"model": weights, "epoch": 3}, legacy, _use_new_zipfile_serialization=False)
    safetensors = root / "weights.safetensors"
    save_file(weights, str(safetensors))
    return {"train": train, "legacy": legacy, "safetensors": safetensors}


class Cases:
    """Case i -> (label, file bytes, suffix), deterministic in (seed, i)."""

    def __init__(self, bases: dict[str, Path], seed: int, counts: dict[str, int] | None = None):
        self.seed = seed
        self.kinds = [kind for kind, n in (counts or DEFAULT_COUNTS).items() for _ in range(n)]
        self.raw = {name: path.read_bytes() for name, path in bases.items()}
        with zipfile.ZipFile(bases["train"]) as archive:
            members = [(info.filename, archive.read(info)) for info in archive.infolist()]
            self.hot = _zip_structure(archive, self.raw["train"])
        # Every member but data.pkl, zipped once; a case appends its data.pkl to a copy.
        self.pkl_name, self.pkl = next((n, d) for n, d in members if n.endswith("/data.pkl"))
        self.without_pkl = _zip([(n, d) for n, d in members if n != self.pkl_name])
        header = int.from_bytes(self.raw["safetensors"][:8], "little")
        self.safetensors_hot = [(0, 8 + header)]

    def __len__(self) -> int:
        return len(self.kinds)

    def case(self, i: int) -> tuple[str, bytes, str]:
        rng = random.Random(self.seed * 1_000_003 + i)
        kind = self.kinds[i]
        if kind == "pkl":
            ops, mutated = mutate(rng, self.pkl)
            buffer = io.BytesIO(self.without_pkl)
            with zipfile.ZipFile(buffer, "a", zipfile.ZIP_STORED) as archive:
                archive.writestr(self.pkl_name, mutated)
            return f"{i}:pkl:{ops}", buffer.getvalue(), ".pth"
        if kind == "zip":
            ops, mutated = mutate(rng, self.raw["train"], self.hot)
            return f"{i}:zip:{ops}", mutated, ".pth"
        if kind == "legacy":
            ops, mutated = mutate(rng, self.raw["legacy"])
            return f"{i}:legacy:{ops}", mutated, ".pth"
        ops, mutated = mutate(rng, self.raw["safetensors"], self.safetensors_hot)
        return f"{i}:safetensors:{ops}", mutated, ".safetensors"


def _zip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def _zip_structure(archive: zipfile.ZipFile, raw: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the zip's bookkeeping: local headers, then central directory + end."""
    spans = []
    for info in archive.infolist():
        start = info.header_offset
        name_len = int.from_bytes(raw[start + 26:start + 28], "little")
        extra_len = int.from_bytes(raw[start + 28:start + 30], "little")
        spans.append((start, start + 30 + name_len + extra_len))
    spans.append((archive.start_dir, len(raw)))
    return spans


# --------------------------------------------------------------------------- mutations


def mutate(rng: random.Random, data: bytes,
           hot: list[tuple[int, int]] | None = None) -> tuple[str, bytes]:
    """One to three mutations; returns (what was done, new bytes)."""
    out = bytearray(data)
    done = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if not out:
            break
        pos = _position(rng, len(out), hot)
        op = rng.choice(("flip", "flip", "trunc", "insert", "delete", "overwrite", "int", "int",
                         "dup"))
        if op == "flip":
            for _ in range(rng.randint(1, 4)):
                p = min(len(out) - 1, pos + rng.randint(0, 3))
                out[p] ^= 1 << rng.randrange(8)
        elif op == "trunc":
            del out[pos:]
        elif op == "insert":
            out[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == "delete":
            del out[pos:pos + rng.randint(1, 16)]
        elif op == "overwrite":
            fill = rng.choice((b"\x00", b"\xff", None))
            n = rng.randint(1, 8)
            out[pos:pos + n] = fill * n if fill else rng.randbytes(n)
        elif op == "int":
            width = rng.choice((1, 2, 4, 4, 8))
            value = rng.choice(_INTERESTING) & ((1 << (8 * width)) - 1)
            out[pos:pos + width] = value.to_bytes(width, "little")
        else:  # dup: a slice of the file copied elsewhere (repeated opcodes or headers)
            start = rng.randrange(len(out))
            out[pos:pos] = bytes(out[start:start + rng.randint(1, 64)])
        done.append(f"{op}@{pos}")
    return "+".join(done), bytes(out)


def _position(rng: random.Random, size: int, hot: list[tuple[int, int]] | None) -> int:
    if hot and rng.random() < 0.7:
        start, end = rng.choice(hot)
        return min(size - 1, rng.randrange(start, max(start + 1, end)))
    return rng.randrange(size)


# --------------------------------------------------------------------------- readers


def _ours_model(path: Path) -> object:
    """What the CLI does: read, pick the state dict, infer the architecture, build the model."""
    from glmix_deploy.models.loader import load_checkpoint

    return load_checkpoint(path)


class CleanExit(Exception):
    """`glmix-deploy inspect` ended in exit 1 or 2 with one `error: ...` line: a clean refusal."""


def _cli(path: Path) -> object:
    """What a user meets: `glmix-deploy inspect --ckpt PATH`, in this process. Exit 0 is 'ok',
    exit 1/2 with exactly one `error:` line on stderr a refusal; anything else (exit 3, a
    traceback, several lines) raises RuntimeError."""
    import contextlib
    import io

    from glmix_deploy.cli.main import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run(["--json", "inspect", "--ckpt", str(path)])
    lines = err.getvalue().splitlines()
    if rc == 0:
        return out.getvalue()
    if rc in (1, 2) and len(lines) == 1 and lines[0].startswith("error: "):
        if "MemoryError" in lines[0]:  # an allocation the file could not back, then mapped
            raise MemoryError(lines[0])
        if "RecursionError" in lines[0]:
            raise RuntimeError(lines[0])
        raise CleanExit(lines[0])
    raise RuntimeError(f"exit {rc}: {' | '.join(lines)[:300]}")


def _ours(path: Path) -> object:
    from glmix_deploy.models.checkpoint_io import load_state_dict

    return load_state_dict(path)


def _weights_only(path: Path) -> object:
    """torch.load(weights_only=True) made to take training checkpoints: list the file's globals
    that torch does not allow, refuse it if one of them runs code (the same rule as ours:
    deny-list, Python 2 names mapped, builtins other than data constructors), stand an inert
    class in for each of the others, then pick the state dict as ours does."""
    import torch

    from glmix_deploy.errors import UnsafeCheckpointError
    from glmix_deploy.models.checkpoint_io import extract_state_dict, load_state_dict
    from glmix_deploy.models.unpickler import make_placeholder, refuses

    if path.suffix == ".safetensors":  # no pickle: both would hand it to safetensors
        return load_state_dict(path)
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except ValueError as exc:
        if "Expected input to be a checkpoint" not in str(exc):
            raise
        names = []  # not a zip (legacy format): nothing to list, torch.load decides
    stand_ins = []
    for qualname in names:
        module, _, name = qualname.rpartition(".")
        if refuses(module, name):
            raise UnsafeCheckpointError(f"refusing {path}: its pickle calls {qualname}")
        stand_ins.append((make_placeholder(module, name), qualname))
    with torch.serialization.safe_globals(stand_ins):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    return extract_state_dict(obj, source=str(path))


def _refusals(torch_errors: bool) -> tuple[type, ...]:
    import pickle

    from glmix_deploy.errors import CheckpointError

    if torch_errors is None:  # the CLI: a clean exit 1/2
        return (CleanExit,)

    # torch.load documents UnpicklingError (weights_only refusal) and RuntimeError (its zip
    # reader); a wrapper adopting it would turn those two into CheckpointError.
    return (CheckpointError, pickle.UnpicklingError, RuntimeError) if torch_errors else (
        CheckpointError,)


READERS: dict[str, tuple[Callable[[Path], object], bool]] = {
    "ours+model": (_ours_model, False),
    "ours": (_ours, False),
    "weights_only": (_weights_only, True),
    "cli": (_cli, None),
}


# --------------------------------------------------------------------------- running


def classify(call: Callable[[Path], object], path: Path,
             refusal: tuple[type, ...]) -> tuple[str, str]:
    """(outcome, message) for one call; outcome is 'ok', 'refused', 'oom' or
    'other:<ExceptionType>'. A refusal caused by a MemoryError (an allocation the file could not
    back, caught and re-raised) counts as 'oom', one caused by a RecursionError as 'other'."""
    try:
        call(path)
    except MemoryError as exc:
        return "oom", _message(exc)
    except refusal as exc:
        causes = _causes(exc)
        if any(isinstance(c, MemoryError) for c in causes):
            return "oom", _message(exc)
        if any(isinstance(c, RecursionError) for c in causes):
            return "other:RecursionError", _message(exc)
        return "refused", _message(exc)
    except Exception as exc:  # noqa: BLE001 - the point is to see it
        return f"other:{type(exc).__name__}", _message(exc)
    return "ok", ""


def _message(exc: BaseException) -> str:
    try:
        return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    except Exception:  # noqa: BLE001
        return type(exc).__name__


def _causes(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 32:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


class _Source:
    """The child's cases: mutations of the base files, or a fixed list of files."""

    def __init__(self, spec: dict) -> None:
        self.files = spec.get("files")
        if self.files:
            self.cases = None
        elif spec.get("structure"):
            from tests.models.structure_mutations import StructureCases

            self.cases = StructureCases(Path(spec["structure"]), spec["seed"], spec["count"])
        else:
            self.cases = Cases({k: Path(v) for k, v in spec["bases"].items()}, spec["seed"],
                               spec["counts"])
        self.work = Path(spec["work"])

    def __len__(self) -> int:
        return len(self.files) if self.files else len(self.cases)

    def get(self, i: int) -> tuple[str, Path]:
        if self.files:
            name, path = self.files[i]
            return f"{i}:file:{name}", Path(path)
        label, data, suffix = self.cases.case(i)
        target = self.work / f"case{suffix}"
        target.write_bytes(data)
        return label, target


def _run_child(spec: dict) -> None:
    """Cases spec['start'].. in this process; one line per finished case in spec['log']."""
    if spec["cap"]:
        resource.setrlimit(resource.RLIMIT_AS, (spec["cap"], spec["cap"]))
    import warnings

    warnings.simplefilter("ignore")  # torch.load's protocol / deprecation warnings
    call, torch_errors = READERS[spec["reader"]]
    refusal = _refusals(torch_errors)
    source = _Source(spec)
    progress = Path(spec["progress"])
    # Imported before the baseline RSS is taken and the first case's clock starts.
    import glmix_deploy.cli.main  # noqa: F401
    import glmix_deploy.models.checkpoint_io  # noqa: F401 - imports torch
    import glmix_deploy.models.glnet  # noqa: F401
    with open(spec["log"], "a", buffering=1) as log:
        log.write(json.dumps(["base_rss_mb", _peak_rss_mb(), "", ""]) + "\n")
        for i in range(spec["start"], len(source)):
            progress.write_text(f"{i}:preparing")
            label, path = source.get(i)
            progress.write_text(label)
            signal.alarm(spec["case_timeout"])  # a hung case: SIGALRM ends the child
            began = time.perf_counter()
            outcome, message = classify(call, path, refusal)
            seconds = time.perf_counter() - began
            signal.alarm(0)
            log.write(json.dumps([i, outcome, label, message, round(seconds, 3)]) + "\n")
        log.write(json.dumps(["peak_rss_mb", _peak_rss_mb(), "", ""]) + "\n")
    progress.write_text("")


def _peak_rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux


def run_contained(reader: str, work: Path, *, bases: dict[str, Path] | None = None,
                  seed: int = 0, counts: dict[str, int] | None = None,
                  files: dict[str, Path] | None = None, structure: Path | None = None,
                  count: int = 0, cap: int | None = ADDRESS_SPACE_CAP,
                  timeout: float = 600.0, case_timeout: int = 60) -> dict:
    """Every case once (the seeded mutations of `bases`, or each of `files`), in child
    processes under an address-space cap. A child that dies (segfault, kill, abort) costs one
    case, counted as 'crash:<signal>', and the run resumes at the next case; so does a case
    that runs past `case_timeout` seconds ('timeout'). `timeout` bounds the whole run.

    Returns {'outcomes': counts per outcome, 'by_kind': the same per case kind, 'cases': one
    [index, outcome, label, message] per case, 'case_seconds': {index: seconds} of the cases
    that finished, 'seconds', 'peak_rss_mb' and 'base_rss_mb' (the child's peak RSS after
    its imports, before its first case), ...}."""
    counts = dict(DEFAULT_COUNTS if counts is None else counts)
    file_list = [[name, str(path)] for name, path in (files or {}).items()]
    total = len(file_list) if files else count if structure else sum(counts.values())
    work.mkdir(parents=True, exist_ok=True)
    log, progress = work / f"{reader}.log", work / f"{reader}.progress"
    log.write_text("")
    crashes: list[list] = []
    start, began, timed_out = 0, time.perf_counter(), False
    while start < total:
        progress.write_text("")
        spec = {"reader": reader, "bases": {k: str(v) for k, v in (bases or {}).items()},
                "structure": str(structure) if structure else None, "count": count,
                "seed": seed, "counts": counts, "files": file_list, "start": start,
                "work": str(work), "log": str(log), "progress": str(progress), "cap": cap,
                "case_timeout": case_timeout}
        left = timeout - (time.perf_counter() - began)
        try:
            child = subprocess.run([sys.executable, "-m", "tests.models.checkpoint_mutations",
                                    "--child", json.dumps(spec)], cwd=ROOT, capture_output=True,
                                   text=True, timeout=max(left, 1.0), check=False)
        except subprocess.TimeoutExpired:
            timed_out = True
            break
        if child.returncode == 0:
            break
        label = progress.read_text()
        if not label:
            raise RuntimeError(f"fuzz child failed outside any case: {child.stderr[-3000:]}")
        rc = child.returncode
        outcome = f"crash:{signal.Signals(-rc).name}" if rc < 0 else f"crash:exit{rc}"
        if rc == -signal.SIGALRM:
            outcome = "timeout"
        index = int(label.split(":", 1)[0])
        crashes.append([index, outcome, label, child.stderr.strip()[-300:]])
        start = index + 1
    rows, peak_rss, base_rss, case_seconds = [], 0, 0, {}
    for line in log.read_text().splitlines():
        row = json.loads(line)
        if row[0] == "peak_rss_mb":
            peak_rss = max(peak_rss, row[1])
        elif row[0] == "base_rss_mb":
            base_rss = max(base_rss, row[1])
        else:
            case_seconds[row[0]] = row[4]
            rows.append(row[:4])
    rows = sorted(rows + crashes)
    if timed_out:
        done = {row[0] for row in rows}
        rows += [[i, "timeout", f"{i}:not run", ""] for i in range(total) if i not in done]
    outcomes: Counter[str] = Counter(row[1] for row in rows)
    by_kind: dict[str, Counter[str]] = {}
    examples: dict[str, str] = {}
    for _, outcome, label, message in rows:
        by_kind.setdefault(label.split(":")[1], Counter())[outcome.split(":")[0]] += 1
        if outcome not in ("ok", "refused"):
            examples.setdefault(outcome, f"{label} ({message[:200]})")
    return {"reader": reader, "outcomes": dict(outcomes), "examples": examples,
            "by_kind": {kind: dict(c) for kind, c in by_kind.items()}, "cases": rows,
            "seconds": round(time.perf_counter() - began, 1), "peak_rss_mb": peak_rss,
            "base_rss_mb": base_rss, "case_seconds": case_seconds}


def _replay(seed: int, index: int, reader: str, counts: dict[str, int] | None) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cases = Cases(make_bases(Path(tmp) / "bases"), seed, counts)
        label, data, suffix = cases.case(index)
        target = Path(tmp) / f"case{suffix}"
        target.write_bytes(data)
        print(label, len(data), "bytes", flush=True)
        print(READERS[reader][0](target))


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        try:
            _run_child(json.loads(sys.argv[2]))
        except BaseException:  # noqa: BLE001 - reported; the parent sees which case died
            traceback.print_exc()
            sys.exit(3)
    elif sys.argv[1] == "--replay":  # --replay SEED INDEX [READER [COUNTS_JSON]]
        _replay(int(sys.argv[2]), int(sys.argv[3]),
                sys.argv[4] if len(sys.argv) > 4 else "ours+model",
                json.loads(sys.argv[5]) if len(sys.argv) > 5 else None)
