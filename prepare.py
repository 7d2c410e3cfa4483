"""The example pipeline's first stage: write one deterministic shard of the data set.

A plain Hydra app, like train.py. Each run writes `shard.npz` into its own run
directory: every `shards`-th point of train.py's two-moons data set, starting
at point `shard`, so the shards of one data set are disjoint and together are
the whole of it:

    python prepare.py -m shard=0,1                # both shards of the default data set
    python prepare.py shard=1 shards=4            # one shard of four

`shard.npz` holds `x` (points, float64 [m, 2]), `y` (labels, float64 [m]) and
`index` (each point's position in the full data set, which train.py uses as the
point's key for its train/val/test split, so a point lands in the same split
whichever shard it came from). The shard is taken with a stride, not as one
block, because the generator lists one class first and the other second: a block
would hold a single class. The file is written whole or not at all (a temporary
file renamed into place), so a downstream run never reads half a shard.

The data set's definition stays in train.py (its `two_moons`): this app imports
it, so the shards are the very points train.py generates when it runs alone,
and train.py keeps running on its own without this file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hpcorch import repro
from train import two_moons

#: The file each run writes into its run directory (train.py reads it by this name).
SHARD_FILE = "shard.npz"


def check_shard(shard: object, shards: object) -> tuple[int, int]:
    """`shard` and `shards` as ints, or one ValueError naming both and what is allowed."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ValueError(f"shards={shards!r}: must be a whole number >= 1")
    if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < shards:
        raise ValueError(f"shard={shard!r}: must be a whole number from 0 to {shards - 1} "
                         f"(shards={shards})")
    return shard, shards


def make_shard(n: int, noise: float, seed: int, shard: int,
               shards: int) -> dict[str, np.ndarray]:
    """Points `shard`, `shard + shards`, ... of the data set: x, y and their indices in it."""
    x, y = two_moons(n, noise, seed)
    index = np.arange(n)[shard::shards]
    return {"x": x[index], "y": y[index], "index": index}


def write_npz(path: Path, arrays: dict[str, Any]) -> None:
    """Write an .npz file atomically: readers see no file or the complete one."""
    with repro.atomic_file(path, binary=True) as handle:  # a file object: no suffix added
        np.savez(handle, **arrays)


def prepare(cfg: DictConfig, out_dir: Path) -> dict[str, float]:
    """Write this run's shard into `out_dir`; returns its metrics."""
    shard, shards = check_shard(cfg.shard, cfg.shards)
    arrays = make_shard(cfg.data.n, cfg.data.noise, cfg.data.seed, shard, shards)
    if len(arrays["index"]) == 0:
        raise ValueError(f"shard={shard} of shards={shards} is empty: data.n={cfg.data.n} "
                         "has fewer points than shards")
    write_npz(out_dir / SHARD_FILE, arrays)
    return {"points": float(len(arrays["y"])), "positive_fraction": float(arrays["y"].mean())}


@hydra.main(version_base="1.3", config_path="conf", config_name="prepare")
def main(cfg: DictConfig) -> dict[str, float]:
    """Hydra entry point."""
    return prepare(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
