"""Every use of Hydra's internals outside the Hydra plugin (DESIGN.md's `_hydra` layer).

The composition cache and the patches a warm worker applies before forking runs
(`warm`). Pinned with hydra-core in pyproject.toml and proven against Hydra by the
conformance tests (tests/integration/test_hydra_conformance.py, Hydra's own launcher
suites); the Hydra plugin's modules (`_compose`, `_runjob`, `_yaml`, `_plainhydra`)
belong to the same layer.
"""
