"""Benchmark: N trivial runs through hydra-ray-launcher and through hpcorch provider=ray,
on the SAME Ray head, in one invocation; prints both wall times and the ratio.

    scripts/ray-up.sh
    scripts/in-netns.sh .venv/bin/python scripts/bench_ray.py [--runs 50] [--repeat 3]
        [--address http://127.0.0.1:8265] [--designs]

Each measurement is the whole command, `python app.py -m ...` start to exit, as a
user sees it. Peer and hpcorch alternate within each repetition (the machine is
shared: alternating spreads the noise over both) and the medians are compared.
--designs also measures hpcorch's other designs on the same head: a Ray job per
run (provider.mode=job) and cold tasks (provider.warm=false, a fresh interpreter
per run). Needs `pip install hydra-ray-launcher==1.2.2` for the peer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = '''
import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    return {"y": float(cfg.x) * 2}


if __name__ == "__main__":
    main()
'''
HPCORCH_CONFIG = "defaults:\n  - hpcorch: default\n  - _self_\n\nx: 0\n"
PEER_CONFIG = "x: 0\n"


def write_app(root: Path) -> Path:
    """A trivial Hydra app with two primary configs: one with hpcorch, one plain (peer)."""
    app = root / "app"
    (app / "conf").mkdir(parents=True)
    (app / "app.py").write_text(APP, encoding="utf-8")
    (app / "conf" / "config.yaml").write_text(HPCORCH_CONFIG, encoding="utf-8")
    (app / "conf" / "peer.yaml").write_text(PEER_CONFIG, encoding="utf-8")
    return app


def timed(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    """Wall seconds of one command; its output goes to `log`; a failure stops the benchmark."""
    start = time.perf_counter()
    with open(log, "wb") as out:
        rc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, check=False).returncode
    took = time.perf_counter() - start
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        sys.exit(f"{argv[2:6]} failed (rc={rc}); see {log}:\n" + "\n".join(tail))
    return took


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--address", default="http://127.0.0.1:8265",
                        help="hpcorch's provider.address (the peer connects with address=auto)")
    parser.add_argument("--designs", action="store_true",
                        help="also measure provider.mode=job and provider.warm=false")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    app = write_app(root)
    env = {**os.environ, "HPCORCH_HOME": str(root / "home"),
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    sweep = f"x=range({args.runs})"
    py = sys.executable
    commands = {
        "hydra-ray-launcher": [py, "app.py", "-m", "--config-name", "peer", "hydra/launcher=ray",
                               "hydra.launcher.ray.init.address=auto",
                               "+hydra.launcher.ray.init.object_store_memory=null", sweep],
        "hpcorch ray (sweep job, warm tasks)": [
            py, "app.py", "-m", "provider=ray", f"provider.address={args.address}",
            "hpcorch.rerun=true", "hpcorch.progress=off", sweep],
    }
    if args.designs:
        commands["hpcorch ray (sweep job, cold tasks)"] = [
            *commands["hpcorch ray (sweep job, warm tasks)"], "provider.warm=false"]
        commands["hpcorch ray (a Ray job per run)"] = [
            *commands["hpcorch ray (sweep job, warm tasks)"], "provider.mode=job"]
    times: dict[str, list[float]] = {name: [] for name in commands}
    print(f"{args.runs} trivial runs, {args.repeat} repetition(s), Ray at {args.address}; "
          f"logs in {root}", flush=True)
    for rep in range(args.repeat):
        for i, (name, argv) in enumerate(commands.items()):
            argv = [*argv, f"hydra.sweep.dir={root}/multirun/{rep}-{i}"]
            took = timed(argv, app, env, root / f"{rep}-{i}.log")
            times[name].append(took)
            print(f"  rep {rep + 1} {name:40s} {took:7.2f} s", flush=True)
    print()
    medians = {name: statistics.median(values) for name, values in times.items()}
    peer = medians["hydra-ray-launcher"]
    for name, value in medians.items():
        print(f"{name:40s} median {value:7.2f} s  ({value / args.runs * 1000:6.0f} ms/run)  "
              f"ratio vs peer {value / peer:5.2f}")
    ours = medians["hpcorch ray (sweep job, warm tasks)"]
    print(f"\nhpcorch / hydra-ray-launcher = {ours:.2f} s / {peer:.2f} s = {ours / peer:.2f} "
          f"({'hpcorch no slower' if ours <= peer else 'hpcorch SLOWER'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
