"""The example research code: a one-hidden-layer MLP trained with mini-batch SGD in numpy.

A plain Hydra app: it knows its config and, optionally, hpcorch.repro (for
its seed and data split). It runs unchanged on every hpcorch provider.

    python train.py                          # one run
    python train.py -m lr=0.1,0.01           # a sweep on the local provider
    python train.py -m resources.tasks=4     # each run as 4 MPI ranks (data-parallel SGD)

With more than one rank (hpcorch starts them under mpirun or srun), every
global mini-batch is split into equal shards, one per rank, and the gradient
sums are added up with an MPI allreduce before the step: the same update as
one process, so the same metrics up to floating-point rounding.

As the train stage of the example pipeline (conf/pipeline/example.yaml) a run
is given upstream prepare runs (`repro.upstream("prepare")`); it then trains on
the points of their `shard.npz` files instead of generating the data set, and
the `data.n`/`noise`/`seed` settings are not used (the `shard` key the pipeline
adds to the config is not read either: the upstream runs say which data it is).
The points are put in data-set order and split by their index in the full data
set, so each point lands in the same train/val/test part as in a run on the
whole data set: a run given every shard computes what a run without a pipeline
computes. Outside a pipeline the list is empty and nothing changes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import hydra
import numpy as np
from omegaconf import DictConfig

from hpcorch import repro
from hpcorch.worker import ranks

log = logging.getLogger(__name__)


def two_moons(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed synthetic data set: two interleaved half circles with Gaussian noise."""
    gen = np.random.default_rng(seed)
    half = n // 2
    angles = np.concatenate([np.linspace(0, np.pi, half), np.linspace(0, np.pi, n - half)])
    upper = np.stack([np.cos(angles[:half]), np.sin(angles[:half])], axis=1)
    lower = np.stack([1 - np.cos(angles[half:]), 0.5 - np.sin(angles[half:])], axis=1)
    x = np.concatenate([upper, lower]) + gen.normal(0.0, noise, size=(n, 2))
    y = np.concatenate([np.zeros(half), np.ones(n - half)])
    return x, y


def load_shards(runs: Sequence[repro.UpstreamRun]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The points of the upstream runs' `shard.npz` files, in data-set order: x, y and each
    point's index in the full data set (its split key). Points given twice (shards of
    two different cuts) are refused: they would count twice and leak across splits."""
    xs, ys, keys = [], [], []
    for run in runs:
        path = run.dir / "shard.npz"
        if not path.is_file():
            raise FileNotFoundError(f"upstream {run.stage} #{run.num} wrote no {path.name}: "
                                    f"{path} does not exist")
        with np.load(path) as data:
            xs.append(data["x"])
            ys.append(data["y"])
            keys.append(data["index"])
    index = np.concatenate(keys)
    order = np.argsort(index, kind="stable")
    index = index[order]
    repeated = index[1:][index[1:] == index[:-1]]
    if repeated.size:
        raise ValueError(f"the upstream shards overlap: point {int(repeated[0])} of the data "
                         f"set is in more than one of {len(runs)} shard files")
    return np.concatenate(xs)[order], np.concatenate(ys)[order], index


def forward(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hidden activations and output probabilities."""
    hidden = np.tanh(x @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    return hidden, 1.0 / (1.0 + np.exp(-logits[:, 0]))


def loss_and_accuracy(
    params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray
) -> tuple[float, float]:
    """Mean binary cross-entropy and accuracy."""
    _, prob = forward(params, x)
    eps = 1e-12
    loss = -np.mean(y * np.log(prob + eps) + (1 - y) * np.log(1 - prob + eps))
    return float(loss), float(np.mean((prob > 0.5) == y))


def gradients(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients of the summed (not mean) loss over the batch."""
    hidden, prob = forward(params, x)
    d_logits = (prob - y)[:, None]
    d_hidden = (d_logits @ params["w2"].T) * (1 - hidden**2)
    return {
        "w2": hidden.T @ d_logits,
        "b2": d_logits.sum(0),
        "w1": x.T @ d_hidden,
        "b1": d_hidden.sum(0),
    }


def allreduce_sum(comm: object, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every rank's gradient sums added up, on every rank, in one allreduce call."""
    names = sorted(grads)
    flat = np.concatenate([grads[n].ravel() for n in names])
    total = np.empty_like(flat)
    comm.Allreduce(flat, total)  # type: ignore[attr-defined]  # MPI.SUM by default
    out, offset = {}, 0
    for name in names:
        size = grads[name].size
        out[name] = total[offset : offset + size].reshape(grads[name].shape)
        offset += size
    return out


def train(cfg: DictConfig) -> dict[str, float]:
    """Train and evaluate; returns the metrics."""
    shards = repro.upstream("prepare")
    if shards:  # the pipeline's train stage: the prepare runs' points
        x, y, index = load_shards(shards)
        items: int | list[int] = index.tolist()
    else:
        x, y = two_moons(cfg.data.n, cfg.data.noise, cfg.data.seed)
        items = cfg.data.n
    parts = repro.split(items, fractions=list(cfg.data.fractions), salt="two_moons")
    train_idx, val_idx, test_idx = (np.array(parts[n]) for n in ("train", "val", "test"))
    init = repro.rng("init")
    params = {
        "w1": init.normal(0, 1 / np.sqrt(2), size=(2, cfg.hidden)),
        "b1": np.zeros(cfg.hidden),
        "w2": init.normal(0, 1 / np.sqrt(cfg.hidden), size=(cfg.hidden, 1)),
        "b2": np.zeros(1),
    }
    world = ranks.current()
    comm = None
    if world.size > 1:  # only a multi-rank run needs MPI
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    order_rng = repro.rng("batches")  # same seed on every rank: same batches everywhere
    for epoch in range(cfg.epochs):
        order = order_rng.permutation(train_idx)
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            shard = np.array_split(batch, world.size)[world.rank]
            grads = gradients(params, x[shard], y[shard])
            if comm is not None:
                grads = allreduce_sum(comm, grads)
            for name in params:
                params[name] -= cfg.lr * grads[name] / len(batch)
        if epoch == cfg.epochs - 1 or epoch % 5 == 0:
            log.info(
                "epoch %d train_loss %.4f",
                epoch,
                loss_and_accuracy(params, x[train_idx], y[train_idx])[0],
            )
    train_loss, train_acc = loss_and_accuracy(params, x[train_idx], y[train_idx])
    val_loss, val_acc = loss_and_accuracy(params, x[val_idx], y[val_idx])
    _, test_acc = loss_and_accuracy(params, x[test_idx], y[test_idx])
    return {
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "test_acc": test_acc,
        "train_acc": train_acc,
    }


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, float]:
    """Hydra entry point."""
    return train(cfg)


if __name__ == "__main__":
    main()
