"""The variables through which a launcher tells each process its rank, and reading them.

mpirun (Open MPI), MPICH's hydra and PMIx name their variables themselves, so
they belong here with the wrappers that start them: `RANK_ENV_PREFIXES` /
`RANK_ENV_NAMES` are what a run in a container needs passed through, and
`OPEN_MPI` / `MPICH` are where a rank finds its place. A scheduler's own step
launcher (srun) is described by the same `RankSource`, given by the code that
knows that scheduler's variables (`detect(env, sources)` tries them in order).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hpcorch.rankfiles import RankInfo

#: Launcher variables a run in a container needs, by prefix (Open MPI, PMIx, PMI/MPICH).
RANK_ENV_PREFIXES: tuple[str, ...] = ("OMPI_", "PMIX_", "PMI_")
#: The same by name, for runtimes that pass no patterns (docker).
RANK_ENV_NAMES: tuple[str, ...] = (
    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
    "PMIX_RANK", "PMIX_NAMESPACE",
)
#: PMIx's rank variable, which a PMIx-speaking step launcher (srun --mpi=pmix) sets.
PMIX_RANK_ENV = "PMIX_RANK"


@dataclass(frozen=True)
class RankSource:
    """Which variables of one launcher say a process's rank, the run's size and its place
    on its node. A process belongs to the first source whose rank and size are set."""

    name: str
    """What RankInfo.source (and the record's fingerprint) calls it."""
    rank: str
    size: tuple[str, ...]
    """Candidates for the run's size, first set one wins."""
    local_rank: str = ""
    local_size: str = ""
    tasks_per_node: str = ""
    """A variable holding ranks per node as `2(x3),1` (compressed counts), read with
    `node_id` when `local_size` is not set."""
    node_id: str = ""
    """This node's index into `tasks_per_node`."""


OPEN_MPI = RankSource("openmpi", "OMPI_COMM_WORLD_RANK", ("OMPI_COMM_WORLD_SIZE",),
                      "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE")
"""Open MPI's mpirun."""
MPICH = RankSource("pmi", "PMI_RANK", ("PMI_SIZE",), "MPI_LOCALRANKID", "MPI_LOCALNRANKS")
"""MPICH's hydra (mpiexec)."""


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "") if name else ""
    try:
        return int(value)
    except ValueError:
        return None


def node_count(spec: str, node: int | None) -> int | None:
    """Entry `node` of compressed per-node counts (`2(x3),1` = 2,2,2,1); None if unreadable."""
    if not spec or node is None:
        return None
    counts: list[int] = []
    for part in spec.split(","):
        count, _, repeat = part.partition("(x")
        try:
            counts += [int(count)] * (int(repeat.rstrip(")")) if repeat else 1)
        except ValueError:
            return None
    return counts[node] if 0 <= node < len(counts) else None


def encode_sources(sources: Sequence[RankSource]) -> str:
    """Rank sources as the job contract carries them (HPCORCH_RANK_SOURCES): JSON."""
    return json.dumps([dataclasses.asdict(s) for s in sources], separators=(",", ":"))


def decode_sources(text: str) -> tuple[RankSource, ...]:
    """The rank sources of `encode_sources`; none for "" or anything unreadable (a rank
    that cannot tell its place runs as a single process, and says so in its record)."""
    try:
        items = json.loads(text) if text else []
        return tuple(RankSource(**{**item, "size": tuple(item["size"])}) for item in items)
    except (ValueError, TypeError, KeyError):
        return ()


def detect(env: Mapping[str, str], sources: Sequence[RankSource], host: str) -> RankInfo:
    """This process's place, from the first source whose rank and size are set (and
    consistent); a single process when none is."""
    for source in sources:
        rank = _int(env, source.rank)
        size = next((s for s in (_int(env, n) for n in source.size) if s is not None), None)
        if rank is None or size is None or not 0 <= rank < size:
            continue
        local_rank = _int(env, source.local_rank)
        local_size = _int(env, source.local_size) or (
            node_count(env.get(source.tasks_per_node, ""), _int(env, source.node_id))
            if source.tasks_per_node else None)
        if local_rank is None:  # no per-node numbering: treat the run as one node
            local_rank, local_size = rank, size
        return RankInfo(rank, size, local_rank, max(local_size or size, local_rank + 1),
                        host, source.name)
    return RankInfo(host=host)
