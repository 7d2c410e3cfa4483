"""The one private submitit name hpcorch uses, pinned: an sbatch script without submitting.

A dry run shows the exact script each job would get. submitit writes a job's script
only while submitting it (`SlurmExecutor._submit_command`); no public function returns
it. Both go through `submitit.slurm.slurm._make_sbatch_string`, so the dry run calls it
too, with the executor's own public `parameters`, `python` and `folder`. pyproject pins
submitit to the version below; tests/unit/test_slurm_submitit.py fails on another one
and checks that this text is, byte for byte, the script submitit submits.
"""

from __future__ import annotations

import shlex

import submitit
from submitit.slurm import slurm as submitit_slurm

#: The submitit release whose private `_make_sbatch_string` this module calls.
PINNED_SUBMITIT = "1.5.4"


def render(executor: submitit.SlurmExecutor, tasks: int) -> str:
    """The sbatch script `executor` would submit for `tasks` array tasks (1: a plain job,
    as submitit submits a batch of one)."""
    params = dict(executor.parameters)
    if tasks > 1:
        params["map_count"] = tasks  # what submitit's own array submission adds
    # The command submitit runs in every job (SlurmExecutor._submitit_command_str).
    command = " ".join([executor.python, "-u -m submitit.core._submit",
                        shlex.quote(str(executor.folder))])
    return submitit_slurm._make_sbatch_string(command=command, folder=executor.folder,
                                              **params)
