"""Our checkpoint reader against torch.load(weights_only=True) with stand-in classes.

Both readers get the same seeded mutation fuzz (tests/models/checkpoint_mutations.py: bit flips,
truncations, insertions, overwrites and size-field integers in data.pkl and in the raw bytes of a
tiny GLNet training checkpoint, a legacy-format file and a safetensors file) and the same
hand-made hostile and broken files (tests/models/hostile_checkpoints.py).

  ours          glmix_deploy.models.checkpoint_io.load_state_dict
  weights_only  what adopting torch 2.13's loader for training checkpoints takes: list the
                globals torch does not allow (torch.serialization.get_unsafe_globals_in_checkpoint;
                they differ per user config), refuse the file if one runs code (our deny-list),
                register an inert placeholder class for each other one
                (torch.serialization.safe_globals([(cls, "module.Name"), ...])), torch.load with
                weights_only=True, then pick the state dict with our extract_state_dict.
                UnpicklingError and RuntimeError (torch's documented errors) count as clean
                refusals; a safetensors file goes to safetensors for both.

Outcomes: loaded; refused cleanly (CheckpointError, or for weights_only also UnpicklingError /
RuntimeError); other exception (anything else: what a caller would not expect); MemoryError
(raised, or caught and re-raised by the reader: an allocation the file could not back); process
died or hung. Every case runs in a child process under a 3 GB address-space cap, so a MemoryError
here is an allocation beyond 3 GB that, uncapped, takes the machine's memory.

    .venv/bin/python benchmarks/checkpoint_fuzz.py [--seed 0] [--cases 2500] [--json out.json]

Takes ~3 minutes on 2 cores (the weights_only reader spends 60 s on one hostile file).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

READERS = ("ours", "weights_only")
FUZZ_ROWS = (("loaded", ("ok",)), ("refused cleanly", ("refused",)),
             ("other exception", ("other",)), ("MemoryError", ("oom",)),
             ("process died or hung", ("crash", "timeout")))


def _group(outcome: str) -> str:
    return outcome.split(":")[0]


def _fuzz(readers: tuple[str, ...], seed: int, cases: int, work: Path) -> dict[str, dict]:
    from tests.models.checkpoint_mutations import (
        DEFAULT_COUNTS,
        make_bases,
        run_contained,
    )

    scale = cases / sum(DEFAULT_COUNTS.values())
    counts = {kind: max(1, round(n * scale)) for kind, n in DEFAULT_COUNTS.items()}
    bases = make_bases(work / "bases")
    return {reader: run_contained(reader, work / "fuzz", bases=bases, seed=seed, counts=counts,
                                  timeout=1800) for reader in readers}


def _files(readers: tuple[str, ...], work: Path) -> dict[str, dict[str, dict]]:
    """family -> reader -> run over that family's files (one child per reader and family)."""
    from tests.models import hostile_checkpoints as hostile
    from tests.models.checkpoint_mutations import run_contained

    root = work / "files"
    root.mkdir(parents=True, exist_ok=True)
    marker = root / "pwned"
    families = {
        "code-running files": hostile.code_exec_files(root, marker),
        "memory-hostile files": {n: make(root) for n, make in hostile.MEMORY_FILES.items()},
        "broken files": {n: make(root) for n, make in hostile.BROKEN_FILES.items()},
    }
    out: dict[str, dict[str, dict]] = {}
    for family, files in families.items():
        out[family] = {}
        for reader in readers:
            result = run_contained(reader, work / "runs" / family.split()[0], files=files,
                                   timeout=1800, case_timeout=60)
            result["executed"] = marker.exists()
            out[family][reader] = result
    return out


def _table(readers: tuple[str, ...], fuzz: dict[str, dict], files: dict[str, dict]) -> str:
    width = 34
    head = f"{'':{width}}" + "".join(f"{r:>16}" for r in readers)
    lines = [head]
    if fuzz:
        total = fuzz[readers[0]]["outcomes"]
        lines.append(f"fuzz, {sum(total.values())} mutated files")
        for title, groups in FUZZ_ROWS:
            cells = [sum(n for o, n in fuzz[r]["outcomes"].items() if _group(o) in groups)
                     for r in readers]
            lines.append(f"  {title:{width - 2}}" + "".join(f"{c:>16}" for c in cells))
        kinds = list(fuzz[readers[0]]["by_kind"])
        for kind in kinds:
            cells = []
            for r in readers:
                c = fuzz[r]["by_kind"].get(kind, {})
                cells.append("/".join(str(c.get(k, 0)) for k in ("ok", "refused", "other"))
                             + (f"+{c.get('oom', 0) + c.get('crash', 0)}!"
                                if c.get("oom", 0) + c.get("crash", 0) else ""))
            lines.append(f"  {kind + ' (loaded/refused/other)':{width - 2}}"
                         + "".join(f"{c:>16}" for c in cells))
        lines.append(f"  {'seconds':{width - 2}}"
                     + "".join(f"{fuzz[r]['seconds']:>16}" for r in readers))
        lines.append(f"  {'peak RSS of a child (MB)':{width - 2}}"
                     + "".join(f"{fuzz[r]['peak_rss_mb']:>16}" for r in readers))
    for family, runs in files.items():
        cells = []
        for r in readers:
            outcomes = runs[r]["outcomes"]
            n = sum(outcomes.values())
            extra = {k: v for k, v in outcomes.items() if k not in ("refused", "ok")}
            cells.append(f"{outcomes.get('refused', 0)}/{n}"
                         + (f" ({sum(extra.values())}!)" if extra else ""))
        lines.append(f"{family + ' refused':{width}}" + "".join(f"{c:>16}" for c in cells))
    lines.append("")
    for family, runs in files.items():
        names = [row[2].split(":", 2)[2] for row in runs[readers[0]]["cases"]]
        for i, name in enumerate(names):
            rows = [runs[r]["cases"][i] for r in readers]
            if len({row[1] for row in rows}) > 1 or any(row[1] != "refused" for row in rows):
                detail = "; ".join(f"{r}: {row[1]}" + (f" ({_gist(row[3])})" if row[3] else "")
                                   for r, row in zip(readers, rows))
                lines.append(f"  {family.split()[0]} / {name}: {detail}")
        for r in readers:
            if runs[r]["executed"]:
                lines.append(f"  {family}: a hostile pickle RAN under {r}")
    return "\n".join(lines)


def _gist(message: str) -> str:
    """The reason in a refusal, without the temporary path."""
    message = re.sub(r"(?<![\w.])/[^\s']*/", "", message)
    message = message.split(" is truncated or corrupt (", 1)[-1].rstrip(")")
    return message[:90]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=2500, help="fuzz cases per reader")
    parser.add_argument("--readers", default=",".join(READERS))
    parser.add_argument("--no-files", action="store_true", help="fuzz only")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args()
    readers = tuple(args.readers.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fuzz = _fuzz(readers, args.seed, args.cases, work) if args.cases else {}
        files = {} if args.no_files else _files(readers, work)
    print(_table(readers, fuzz, files))
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "fuzz": fuzz, "files": files},
                                        indent=1))


if __name__ == "__main__":
    main()
