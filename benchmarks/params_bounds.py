"""Benchmark: hostile YAML (an alias bomb, 3,000-deep nesting) is refused about as fast as a
normal params file loads.

Target from issue 16: exit 2 with a clear message in under 2 s. The script measures, in one
run, the median time ``load_params`` takes to refuse each hostile file and to load
``params/lab.yaml`` (the baseline), and prints both and their ratio:

    .venv/bin/python benchmarks/params_bounds.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cni_runbook.params import LAB_FILE, ParamsError, load_params

TARGET_S = 2.0
BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"] + [
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]) + "\n"
DEEP = "x: " + "[" * 3000 + "]" * 3000 + "\n"


def _time(path: Path, refused: bool) -> float:
    t0 = time.perf_counter()
    try:
        load_params([path])
    except ParamsError:
        if not refused:
            raise
    else:
        if refused:
            raise SystemExit(f"{path.name} was not refused")
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="params-bounds-"))
    (folder / "bomb.yaml").write_text(BOMB)
    (folder / "deep.yaml").write_text(DEEP)
    load_params([LAB_FILE])  # warm: imports and the first static checks are not what is measured
    base = statistics.median(_time(LAB_FILE, False) for _ in range(args.rounds))
    print(f"baseline params/lab.yaml: {base:.3f} s")
    worst = 0.0
    for name in ("bomb.yaml", "deep.yaml"):
        median = statistics.median(_time(folder / name, True) for _ in range(args.rounds))
        worst = max(worst, median)
        print(f"{name} ({(folder / name).stat().st_size} bytes) refused in {median:.3f} s = "
              f"{median / base:.1f} x the baseline, {median / TARGET_S:.2f} of the {TARGET_S:.0f} s target")
    return 0 if worst < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
