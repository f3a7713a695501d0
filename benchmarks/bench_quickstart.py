"""Time the README's quickstart from a fresh folder, as a newcomer runs it (issue 31: it must
run in under two minutes on the development machine).

Runs the quickstart's commands (``qs-*`` in ``docs/gen_examples.py``, the same commands the
README shows) one after the other in a new temporary folder, with one CPU thread per process,
and prints each step's wall time. Reference in the same run: ``grdkit --version`` (the
interpreter and CLI start-up every step pays), so a slow shared machine shows as a larger
reference rather than a mystery.

Usage: python benchmarks/bench_quickstart.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gen():
    spec = importlib.util.spec_from_file_location("gen_examples", ROOT / "docs" / "gen_examples.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_examples", mod)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="run in this folder (default: a temporary one)")
    args = ap.parse_args()
    gen = _gen()
    env = gen._env()
    work = args.keep or Path(tempfile.mkdtemp(prefix="grdkit-quickstart-"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    subprocess.run(["grdkit", "--version"], cwd=work, env=env, check=True, capture_output=True)
    ref = time.perf_counter() - t
    rows, total = [], 0.0
    for ex in gen.EXAMPLES:
        if not ex.name.startswith("qs-"):
            continue
        t = time.perf_counter()
        res = subprocess.run(["bash", "-c", ex.cmd], cwd=work, env=env, capture_output=True,
                             text=True, check=False)
        dt = time.perf_counter() - t
        if res.returncode:
            raise SystemExit(f"{ex.name} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
        total += dt
        rows.append((ex.name, dt))
    for name, dt in rows:
        print(f"{name:12s} {dt:7.1f} s")
    print(f"{'total':12s} {total:7.1f} s  (target < 120 s; {total / ref:.0f}x the "
          f"`grdkit --version` start-up of {ref:.2f} s)")


if __name__ == "__main__":
    main()
