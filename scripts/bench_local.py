#!/usr/bin/env python3
"""Benchmark: 200 trivial runs through Hydra's basic launcher, hydra-joblib-launcher and
hpcorch's local provider, in one invocation; prints each wall time and the ratios.

    python scripts/bench_local.py [--runs 200] [--repeat 1]

Each launcher runs the same trivial app (its task returns a number) as a fresh
`python app.py -m x=0,1,...` process; wall time is from process start to exit.
With --repeat N the three launchers take turns N times and each one's best
(lowest) time is compared: on a shared 2-core machine the noise between two
runs of the same command is larger than the differences being measured.
"""

from __future__ import annotations

import argparse
import os
import resource
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


def timed(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Run one command, fail loudly if it fails; return (wall s, CPU s of its process tree).

    CPU time (user + system of the command and every descendant it waited for)
    does not depend on what else the machine is doing, unlike wall time.
    """
    env = {**os.environ, "HPCORCH_HOME": str(cwd / ".hpcorch")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[:4])} ... failed rc={proc.returncode}:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def main() -> int:
    """Run the three launchers and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1,
                        help="take turns this many times; compare each launcher's best")
    args = parser.parse_args()
    sweep = f"x=range(0,{args.runs})"
    py = sys.executable
    all_times: dict[str, list[tuple[float, float]]] = {}
    for turn in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
            base = Path(tmp)
            plain = make_app(base / "plain", CONFIG_PLAIN)
            ours = make_app(base / "hpcorch", CONFIG_HPCORCH)
            commands = {
                "hydra basic launcher": ([py, "app.py", "-m", sweep], plain),
                "hydra joblib launcher": ([py, "app.py", "-m", "hydra/launcher=joblib", sweep],
                                          plain),
                "hpcorch local provider": ([py, "app.py", "-m", sweep], ours),
            }
            for name, (argv, cwd) in commands.items():
                all_times.setdefault(name, []).append(timed(argv, cwd))
        if args.repeat > 1:
            print(f"turn {turn + 1}: " + ", ".join(
                f"{name} {times[-1][0]:.2f} s" for name, times in all_times.items()))
    results = {name: min(times) for name, times in all_times.items()}
    ours_wall, ours_cpu = results["hpcorch local provider"]
    print(f"{args.runs} trivial runs, {os.cpu_count()} cores, load average now "
          f"{os.getloadavg()[0]:.1f}" + (f", best of {args.repeat}" if args.repeat > 1 else ""))
    for name, (wall, cpu) in results.items():
        print(f"  {name:24s} wall {wall:7.2f} s ({wall / args.runs * 1000:6.1f} ms/run)   "
              f"cpu {cpu:7.2f} s")
    for peer in ("hydra basic launcher", "hydra joblib launcher"):
        wall, cpu = results[peer]
        print(f"  hpcorch vs {peer:22s} wall {wall / ours_wall:5.2f}x   cpu {cpu / ours_cpu:5.2f}x")
    best = min(results["hydra basic launcher"][0], results["hydra joblib launcher"][0])
    print(f"  wall-time speed-up vs the faster peer: {best / ours_wall:.2f}x (target >= 5x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
