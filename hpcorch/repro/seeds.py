"""Per-run seeds: derived deterministically, identical on every provider.

A run's seed is the explicit `seed=` override when there is one; otherwise it
is derived from the base seed (the config's `seed`, 0 when absent) and the
run's own overrides, so the runs of a sweep get distinct, stable seeds.
Overrides that only say where a run executes (provider, container,
resources, hpcorch, hydra) are left out, so moving a sweep between
providers keeps every seed.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from hpcorch.errors import ConfigError
from hpcorch.identity import DEFAULT_KEY_EXCLUDE, canonical_json, short_hash
from hpcorch.jobenv import SEED_ENV

#: The environment variable through which a job (and its child processes) learns its seed.
SEED_OVERRIDE_KEY = "seed"
_SEED_MODULUS = 2**31 - 1

#: PYTHONHASHSEED as this interpreter started with it ('' = random). Python reads the
#: variable only at start-up, so a warm (forked) run keeps its launcher's value even
#: after apply_seed() exports the run's seed; the fingerprint records this one.
STARTUP_HASH_SEED = os.environ.get("PYTHONHASHSEED", "")


#: The largest seed every generator and PYTHONHASHSEED accept (seeds are 0 .. 2**32 - 1).
MAX_SEED = 2**32 - 1


def check_seed(value: Any, key: str = SEED_OVERRIDE_KEY) -> int:
    """`value` as a seed, or ConfigError naming `key`, the value and what is allowed.

    A seed is a whole number from 0 to 2**32 - 1: PYTHONHASHSEED and numpy refuse
    anything else (a negative seed would pass planning and fail every run at start-up),
    and a float or a boolean would silently become another number. `None` (no seed
    in the config) is the default base seed, 0.
    """
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(key, value, f"must be a whole number from 0 to {MAX_SEED}")
    return value


def _pairs(overrides: Sequence[str], parsed: Sequence[Any] | None) -> list[tuple[str, object]]:
    if parsed is None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [(o.key_or_group.lstrip("+~"), o.value()) for o in parsed if not o.is_delete()]


def derive_seed(base_seed: int, overrides: Sequence[str],
                exclude: Iterable[str] = DEFAULT_KEY_EXCLUDE,
                parsed: Sequence[Any] | None = None) -> int:
    """The seed of the run with these task overrides. `parsed`: the same overrides as
    Hydra's parser returns them, when the caller has them already (parsing is slow)."""
    dropped = set(exclude)
    relevant: dict[str, object] = {}
    for key, value in _pairs(overrides, parsed):
        if key == SEED_OVERRIDE_KEY:
            return check_seed(value)
        if key.split(".")[0].split("/")[0] in dropped:
            continue
        relevant[key] = value
    base = check_seed(base_seed)
    if not relevant:
        return base
    digest = short_hash(canonical_json({"base": base, "overrides": relevant}), 15)
    return int(digest, 16) % _SEED_MODULUS


def apply_seed(seed: int) -> list[str]:
    """Seed every generator this process uses; returns the names of what was seeded.

    PYTHONHASHSEED only takes effect in processes started after it is set:
    it is exported here so that the job's children inherit it, and providers
    that start a fresh interpreter set it in the job's environment.
    """
    seeded = ["random"]
    random.seed(seed)
    os.environ[SEED_ENV] = str(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    seeded.append("PYTHONHASHSEED(env)")
    try:
        import numpy.random as np_random
    except ImportError:  # numpy is a dependency, but seeding must not require it
        pass
    else:
        np_random.seed(seed % 2**32)
        seeded.append("numpy")
    torch = sys.modules.get("torch")
    if torch is not None:  # seed torch only when the research code already uses it
        seeded += seed_torch(torch, seed)
    return seeded


def seed_torch(torch: Any, seed: int) -> list[str]:
    """Seed torch's CPU generator and every CUDA device's; returns what was seeded.

    hpcorch never imports torch itself (it costs seconds of start-up in runs
    that do not use it): the worker seeds it when it is already imported, or
    the moment it is (see hpcorch.repro.determinism).
    """
    torch.manual_seed(seed)
    seeded = ["torch"]
    cuda = getattr(torch, "cuda", None)
    if cuda is not None:
        cuda.manual_seed_all(seed)  # lazy: queued until CUDA initialises, so it costs nothing
        if cuda.is_available():
            seeded.append("torch.cuda")
    return seeded
