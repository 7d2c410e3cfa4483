"""Shared pieces of the pipeline tests: a small plain Hydra app and how to drive it.

The app (no `- hpcorch: default` line) logs each start to `starts.log` in its working
directory, so a test counts exactly which runs started; `fail-<stage>-<shard>` files
make a run fail, `+sleep=S` keeps it running.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def copy_example(tmp_path: Path) -> Path:
    """A copy of the example pipeline: its three apps, conf/ and the baselines."""
    target = tmp_path / "example"
    target.mkdir()
    for name in ("prepare.py", "train.py", "evaluate.py"):
        shutil.copy(ROOT / name, target / name)
    shutil.copytree(ROOT / "conf", target / "conf")
    shutil.copytree(ROOT / "baselines", target / "baselines")
    return target


APP = '''
import os, time
import hydra
from hydra.core.hydra_config import HydraConfig
from hpcorch import repro

@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg):
    out = HydraConfig.get().runtime.output_dir
    stage = os.path.basename(os.path.dirname(out))
    with open("starts.log", "a") as log:
        log.write(f"{stage} {' '.join(HydraConfig.get().overrides.task)}\\n")
    inputs = repro.upstream()
    if os.path.exists(f"fail-{stage}-{cfg.get('shard')}"):
        raise ValueError(f"asked to fail: {stage} shard {cfg.get('shard')}")
    if os.path.exists(f"fail-once-{stage}-{cfg.get('shard')}"):
        os.unlink(f"fail-once-{stage}-{cfg.get('shard')}")
        raise ValueError(f"asked to fail once: {stage} shard {cfg.get('shard')}")
    if stage == "prep":
        with open(os.path.join(out, "shard.txt"), "w") as handle:
            handle.write(str(10 * int(cfg.shard) + int(cfg.get("scale", 1))))
    time.sleep(float(cfg.get("sleep", 0)))
    total = sum(float((u.dir / "shard.txt").read_text()) for u in inputs if u.stage == "prep")
    total += sum(u.metrics.get("value", 0.0) for u in inputs if u.stage == "train")
    return {"value": total + float(cfg.get("lr", 0)), "inputs": float(len(inputs))}

if __name__ == "__main__":
    main()
'''


def toy_pipeline(root: Path, stage_settings: dict[str, dict[str, Any]] | None = None,
                 **evaluate: object) -> Path:
    """The toy app and `toy.yaml`: prep (shard=0,1) -> train (lr=1,2, each) -> ev (all);
    `stage_settings` adds keys to stages (e.g. their provider)."""
    (root / "app.py").write_text(textwrap.dedent(APP))
    data = {"name": "toy", "stages": {
        "prep": {"app": "app.py", "sweep": {"+shard": [0, 1]}},
        "train": {"app": "app.py", "sweep": {"+lr": [1, 2]}, "needs": {"prep": "each"}},
        "ev": {"app": "app.py", "needs": {"train": evaluate or "all"}},
    }}
    for name, settings in (stage_settings or {}).items():
        data["stages"][name].update(settings)
    path = root / "toy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def hpcorch(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`hpcorch ARGS` in `root`, with its own index home."""
    env = {**os.environ, "HPCORCH_HOME": str(root / "home")}
    return subprocess.run([sys.executable, "-m", "hpcorch", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def starts(root: Path) -> list[str]:
    """The runs that started, one line each (stage and overrides), sorted."""
    log = root / "starts.log"
    return sorted(log.read_text().splitlines()) if log.exists() else []


def record(root: Path, stage: str, num: int) -> dict:
    """The record of run `num` of `stage` of the toy pipeline."""
    path = root / "pipelines" / "toy" / stage / str(num) / ".hpcorch" / "record.json"
    return json.loads(path.read_text())


