"""The job contract: every `HPCORCH_*` name, and the environment a run's process starts with.

One module owns each name (issue 11): the planner, every provider, the
container wrapper, the launch wrappers and the worker inside the job read them
from here. It is core: it imports nothing of hpcorch but the spec, so any layer
may use it.
"""

from __future__ import annotations

import os
from pathlib import Path

from hpcorch.spec import RunSpec

#: Everything hpcorch keeps in a run directory lives under this sub-directory.
META_DIR = ".hpcorch"
#: The run's RunSpec, written there before the run is submitted.
SPEC_FILE = "spec.json"

SPEC_ENV = "HPCORCH_SPEC"
"""Where the job's RunSpec is (`<run_dir>/.hpcorch/spec.json`): its presence says the
process is a job hpcorch planned."""
SEED_ENV = "HPCORCH_SEED"
"""The run's seed, for research code that wants it without reading its config."""
HASH_SEED_ENV = "PYTHONHASHSEED"
"""Python's own hash seed, pinned to the run's seed in fresh interpreters."""
JOB_ID_ENV = "HPCORCH_JOB_ID"
"""The run's job id as its engine names it (`123_4` for a Slurm array task, `77.3` for a
Grid Engine one): every provider sets it, so the job never reads an engine's variables."""
RESTART_ENV = "HPCORCH_RESTART_COUNT"
"""How often the engine started this run's job again (requeued at a time limit or after
preemption); 0 or unset on the first start. Set by the array-task runners."""
PROVIDER_ENV = "HPCORCH_PROVIDER"
"""The provider's name, so the record the job writes carries it."""
RANK_SOURCES_ENV = "HPCORCH_RANK_SOURCES"
"""Where a rank of a run started by a scheduler's own step launcher (srun) finds its
place: that provider's rank sources (hpcorch.launch.rankenv.encode_sources), set by its
array task, so the worker names no scheduler's variables itself."""
HOME_ENV = "HPCORCH_HOME"
"""Where the index lives (else the nearest `.hpcorch`, else `./.hpcorch`)."""
IMAGE_ENV = "HPCORCH_IMAGE"
"""Inside a container: the image reference the run was started with."""
IMAGE_DIGEST_ENV = "HPCORCH_IMAGE_DIGEST"
"""Inside a container: the image's pinned digest."""
RUNTIME_ENV = "HPCORCH_CONTAINER_RUNTIME"
"""Inside a container: the runtime that started it (podman, docker, apptainer)."""
WORKDIR_ENV = "HPCORCH_WORKDIR"
"""The directory a run starts in, for providers that start it elsewhere first (Ray)."""
SWEEP_ID_ENV = "HPCORCH_SWEEP_ID"
"""The run's sweep id, for providers that must find a sweep's runs by it (Ray)."""
CONTRACT_BEHAVIOUR_ENV = "HPCORCH_CONTRACT_BEHAVIOUR"
"""In `hpcorch.testing`'s contract runs: what a run that cannot execute should do."""

#: What a launcher must pass to every rank of a run (mpirun -x, srun --export).
JOB_ENV: tuple[str, ...] = (SPEC_ENV, SEED_ENV, HASH_SEED_ENV)


def spec_file(run_dir: str | os.PathLike[str]) -> Path:
    """`<run_dir>/.hpcorch/spec.json`: where a run's RunSpec is written before submission."""
    return Path(run_dir) / META_DIR / SPEC_FILE


def job_variables(spec: RunSpec) -> dict[str, str]:
    """The variables hpcorch sets for a run's process: its spec's path and its seed."""
    return {SPEC_ENV: str(spec_file(spec.run_dir)), SEED_ENV: str(spec.seed),
            HASH_SEED_ENV: str(spec.seed)}


def job_environment(spec: RunSpec, *, provider: str = "", job_id: str = "") -> dict[str, str]:
    """The environment a run's process starts with: ours, the spec's, its seed and spec
    path, and, from providers that know them up front, their name and the run's job id
    (the run's record then carries both as it is written)."""
    env = dict(os.environ)
    env.update(dict(spec.env))
    if provider:
        env[PROVIDER_ENV] = provider
    if job_id:
        env[JOB_ID_ENV] = job_id
    env.update(job_variables(spec))
    return env


def in_planned_job() -> bool:
    """Whether this process is a job hpcorch planned (its spec is in the environment)."""
    return bool(os.environ.get(SPEC_ENV))
