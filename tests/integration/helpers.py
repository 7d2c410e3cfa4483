"""Helpers for tests that run Hydra apps as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PROBE_APP = '''
import os, sys, time, json, subprocess
import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd, to_absolute_path
from omegaconf import OmegaConf

OmegaConf.register_new_resolver("twice", lambda x: 2 * int(x), replace=True)

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    if cfg.sleep and not os.environ.get("PROBE_NO_SLEEP"):
        # a grandchild that must not outlive a cancelled run
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "probe-grandchild",
                          get_original_cwd()])
        open(os.path.join(HydraConfig.get().runtime.output_dir, "started"), "w").close()
        time.sleep(cfg.sleep)
    if cfg.fail:
        raise ValueError(f"probe failure x={cfg.x}")
    hc = HydraConfig.get()
    return {"x": float(cfg.x), "doubled": float(cfg.doubled), "num": float(hc.job.num),
            "id": str(hc.job.id), "cwd": os.getcwd(), "original_cwd": get_original_cwd(),
            "abs": to_absolute_path("data.txt"), "model": cfg.model.kind,
            "output_dir": hc.runtime.output_dir,
            "flags": f"struct={OmegaConf.is_struct(cfg)} readonly={OmegaConf.is_readonly(cfg)}"}

if __name__ == "__main__":
    main()
'''

PROBE_CONFIG = """defaults:
  - hpcorch: default
  - model: a
  - _self_
x: 1
doubled: ${twice:${x}}
sleep: 0
fail: false
"""


def write_probe_app(root: Path, hpcorch: bool = True) -> Path:
    """A small app that reports what it saw of Hydra's job context."""
    (root / "conf" / "model").mkdir(parents=True, exist_ok=True)
    (root / "app.py").write_text(PROBE_APP)
    config = PROBE_CONFIG if hpcorch else PROBE_CONFIG.replace("  - hpcorch: default\n", "")
    (root / "conf" / "config.yaml").write_text(config)
    (root / "conf" / "model" / "a.yaml").write_text("kind: a\n")
    (root / "conf" / "model" / "b.yaml").write_text("kind: b\n")
    return root


def run(cwd: Path, *args: str, timeout: float = 300, env: dict[str, str] | None = None,
        script: str = "app.py") -> subprocess.CompletedProcess[str]:
    """Run `python SCRIPT ARGS` in `cwd` and return the completed process."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run([sys.executable, script, *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def hpcorch_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `hpcorch` CLI (as `python -m hpcorch`)."""
    return subprocess.run([sys.executable, "-m", "hpcorch", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)


def records(sweep_dir: Path) -> list[dict[str, Any]]:
    """The run records under a sweep directory, in job order."""
    found = sorted(sweep_dir.glob("*/.hpcorch/record.json"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else p.parent.parent.name)
    return [json.loads(p.read_text()) for p in found]


def only_sweep_dir(root: Path) -> Path:
    """The single sweep directory under `root/multirun` (fails if there is not exactly one)."""
    dirs = [p.parent for p in root.glob("multirun/*/*/multirun.yaml")]
    assert len(dirs) == 1, dirs
    return dirs[0]
