#!/usr/bin/env python3
"""Benchmark: 200 trivial runs through Hydra's basic launcher, hydra-joblib-launcher and
hpcorch's local provider, in one invocation; prints each wall time and the ratios.

    python scripts/bench_local.py [--runs 200]

Each launcher runs the same trivial app (its task returns a number) as a fresh
`python app.py -m x=0,1,...` process; wall time is from process start to exit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = '''
import hydra

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    return {"value": float(cfg.x) * 2}

if __name__ == "__main__":
    main()
'''

CONFIG_PLAIN = "x: 0\n"
CONFIG_HPCORCH = "defaults:\n  - hpcorch: default\n  - _self_\nx: 0\n"


def make_app(root: Path, config: str) -> Path:
    """Write the trivial app with its config into `root`."""
    (root / "conf").mkdir(parents=True)
    (root / "app.py").write_text(APP)
    (root / "conf" / "config.yaml").write_text(config)
    return root


def timed(argv: list[str], cwd: Path) -> float:
    """Run one command, fail loudly if it fails, return its wall time."""
    env = {**os.environ, "HPCORCH_HOME": str(cwd / ".hpcorch")}
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[:4])} ... failed rc={proc.returncode}:\n{proc.stderr[-3000:]}")
    return elapsed


def main() -> int:
    """Run the three launchers and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    sweep = "x=range(0,%d)" % args.runs
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        base = Path(tmp)
        plain = make_app(base / "plain", CONFIG_PLAIN)
        ours = make_app(base / "hpcorch", CONFIG_HPCORCH)
        results = {
            "hydra basic launcher": timed([py, "app.py", "-m", sweep], plain),
            "hydra joblib launcher": timed(
                [py, "app.py", "-m", "hydra/launcher=joblib", sweep], plain),
            "hpcorch local provider": timed([py, "app.py", "-m", sweep], ours),
        }
    ours_s = results["hpcorch local provider"]
    best_peer = min(results["hydra basic launcher"], results["hydra joblib launcher"])
    print(f"{args.runs} trivial runs, {os.cpu_count()} cores")
    for name, seconds in results.items():
        print(f"  {name:24s} {seconds:7.2f} s   {seconds / args.runs * 1000:6.1f} ms/run")
    print(f"  speed-up vs basic  : {results['hydra basic launcher'] / ours_s:.2f}x")
    print(f"  speed-up vs joblib : {results['hydra joblib launcher'] / ours_s:.2f}x")
    print(f"  speed-up vs faster peer: {best_peer / ours_s:.2f}x (target >= 5x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
