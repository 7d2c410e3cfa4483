"""Hydra's own launcher conformance suites, run against `hydra/launcher=hpcorch`.

Subclassed exactly as Hydra's plugins subclass them (launcher_name `hpcorch`,
no hpcorch-specific overrides): the apps and configs are Hydra's, none of them
has heard of hpcorch, so the launcher must install its worker callback itself
and default to the local provider. The Slurm variant runs Hydra's integration
apps on the real Slurm (`+provider=slurm`, job dirs under the test's tmpdir,
which the test cluster's node sees).
"""

from __future__ import annotations

import pytest
from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("launcher_name, overrides", [("hpcorch", [])])
class TestHpcorchLauncher(LauncherTestSuite):
    """Hydra's in-process launcher suite on the default (local) provider."""


@pytest.mark.parametrize(
    "launcher_name, overrides",
    [("hpcorch", ["hydra/sweeper=basic", "hydra.sweeper.max_batch_size=2"])],
)
class TestHpcorchLauncherBatched(BatchedSweeperTestSuite):
    """The batched-sweeper suite: a sweeper that calls the launcher three times."""


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        pytest.param(
            {},
            ["-m", "hydra/launcher=hpcorch", "hydra/hydra_logging=disabled",
             "hydra/job_logging=disabled"],
            id="hpcorch_launcher_multirun",
        )
    ],
)
class TestHpcorchLauncherIntegration(IntegrationTestSuite):
    """Hydra's subprocess suite: apps written to a tmpdir, run with `-m`."""


@pytest.fixture
def _slurm() -> None:
    from tests.integration.slurm_support import require_slurm

    require_slurm()


@pytest.mark.slurm
@pytest.mark.usefixtures("_slurm")
@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        pytest.param(
            {},
            ["-m", "hydra/launcher=hpcorch", "hydra/hydra_logging=disabled",
             "hydra/job_logging=disabled", "+hydra/launcher/provider=slurm"],
            id="hpcorch_launcher_slurm_multirun",
        )
    ],
)
class TestHpcorchLauncherIntegrationSlurm(IntegrationTestSuite):
    """The same suite with every job an sbatch array task on the real Slurm: the apps'
    tmpdirs are on this machine's disk, which the test cluster's node shares."""
