"""The layers of ../shared/DESIGN.md, read off the import graph (issue 11, point 1).

Each module belongs to a layer; a layer may import only the layers above it
(lower rank here) and itself. The test reads every `import` of the package and
the Hydra plugin with `ast` (lazy imports inside functions included: they are
dependencies all the same) and fails on an edge against that order, and on an
engine's name or variable (`SLURM_`, `RAY_`, `SGE_`, `OMPI_`, `PMIX_`) in code
outside that engine's package.

The re-layering is not finished: the edges and names found when this test was
written are listed in `layering_debt.txt` beside it. The test fails on any NEW
violation, and on a listed one that no longer exists (delete its line), so the
list only shrinks.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEBT = Path(__file__).with_name("layering_debt.txt")

#: Layer of each module, by the longest matching dotted prefix; rank = position.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("hpcorch.spec", "hpcorch.errors", "hpcorch.settings", "hpcorch.identity",
              "hpcorch.runner", "hpcorch.core", "hpcorch.__init__", "hpcorch")),
    ("_hydra", ("hpcorch._hydra", "hydra_plugins.hpcorch_launcher._compose",
                "hydra_plugins.hpcorch_launcher._runjob", "hydra_plugins.hpcorch_launcher._yaml",
                "hydra_plugins.hpcorch_launcher._plainhydra")),
    ("store", ("hpcorch.store",)),
    ("launch", ("hpcorch.launch",)),
    ("containers", ("hpcorch.containers",)),
    ("repro", ("hpcorch.repro.seeds", "hpcorch.repro.splits", "hpcorch.repro.fingerprint",
               "hpcorch.repro.determinism", "hpcorch.repro.settings", "hpcorch.repro.__init__",
               "hpcorch.repro", "hpcorch.checkpoint")),
    ("checks", ("hpcorch.checks", "hpcorch.repro.baselines", "hpcorch.repro.tolerances",
                "hpcorch.repro.drift", "hpcorch.repro.diffing", "hpcorch.repro.results",
                "hpcorch.repro.reports")),
    ("worker", ("hpcorch.worker",)),
    ("providers", ("hpcorch.providers",)),
    ("orchestrate", ("hpcorch.orchestrate", "hpcorch.repro.verify")),
    ("entry", ("hpcorch.cli", "hpcorch.__main__", "hpcorch.testing", "hydra_plugins")),
)

#: Engine words and the package that may say them.
ENGINES = {
    "SLURM_": "hpcorch.providers.slurm",
    "RAY_": "hpcorch.providers.ray",
    "SGE_": "hpcorch.providers.sge",
    # Open MPI's and PMIx's variables belong to the MPI launcher (launch: mpirun) and the
    # mpi provider.
    "OMPI_": ("hpcorch.launch", "hpcorch.providers.mpi"),
    "PMIX_": ("hpcorch.launch", "hpcorch.providers.mpi"),
}


#: Provider names, said (as a whole string) only by the provider itself and the registry.
PROVIDER_NAMES = {name: f"hpcorch.providers.{name}" for name in ("local", "slurm", "ray", "mpi",
                                                                   "sge")}
REGISTRY = "hpcorch.providers.__init__"
#: Strings equal to a provider's name that do not mean the provider: the `mpi` entry of
#: an environment fingerprint (and of a record's rank summary) is the MPI library a run
#: used (Open MPI 4.1.4, mpi4py), on every provider. Renaming it would make every older
#: record and baseline differ from new ones in `hpcorch diff`/drift checks.
NOT_A_PROVIDER = {("hpcorch.repro.fingerprint", "mpi"), ("hpcorch.repro.diffing", "mpi"),
                  ("hpcorch.worker.ranks", "mpi")}


def layer_of(module: str) -> int:
    best, rank = "", -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, rank = prefix, index
    return rank


def modules() -> Iterator[tuple[str, Path]]:
    for base, package in ((ROOT, "hpcorch"), (ROOT / "launchers", "hydra_plugins")):
        for path in sorted((base / package).rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            yield ".".join(parts), path


def imports(module: str, tree: ast.AST) -> Iterator[str]:
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            yield base


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the constant nodes that are docstrings (module, class, function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
        # attribute docstrings: a bare string right after an assignment
        for field in ("body", "orelse"):
            block = getattr(node, field, None)
            for stmt in block if isinstance(block, list) else []:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                    found.add(id(stmt.value))
    return found


def violations() -> set[str]:
    found: set[str] = set()
    for module, path in modules():
        tree = ast.parse(path.read_text(), str(path))
        mine = layer_of(module)
        for target in imports(module, tree):
            if not target.startswith(("hpcorch", "hydra_plugins.hpcorch_launcher")):
                continue
            theirs = layer_of(target)
            if theirs > mine:
                found.add(f"import {module} -> {target}")
        skip = docstrings(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
                continue
            if id(node) in skip:
                continue
            name_owner = PROVIDER_NAMES.get(node.value)
            if (name_owner and not module.startswith((name_owner, REGISTRY))
                    and (module, node.value) not in NOT_A_PROVIDER):
                found.add(f"name {module}: '{node.value}'")
            for word, owners in ENGINES.items():
                owners = (owners,) if isinstance(owners, str) else owners
                # at a word's start: SLURM_ARRAY_TASK_ID is Slurm's, not Ray's
                if (re.search(rf"(?<![A-Z0-9]){word}", node.value)
                        and not module.startswith(owners)):
                    found.add(f"name {module}: {word}")
    return found


def test_imports_only_go_down_the_layers_and_engines_stay_home() -> None:
    listed = {line.strip() for line in DEBT.read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    found = violations()
    new = sorted(found - listed)
    gone = sorted(listed - found)
    assert not new, "against DESIGN.md's layers (fix, do not list):\n" + "\n".join(new)
    assert not gone, "fixed, so delete from layering_debt.txt:\n" + "\n".join(gone)


def test_the_layer_map_knows_every_module() -> None:
    unknown = [m for m, _ in modules() if layer_of(m) < 0]
    assert not unknown, unknown


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    tree = ast.parse("from hpcorch.orchestrate.sweep import Orchestrator\n")
    targets = list(imports("hpcorch.store.records", tree))
    assert targets == ["hpcorch.orchestrate.sweep"]
    assert layer_of("hpcorch.orchestrate.sweep") > layer_of("hpcorch.store.records")


def test_every_hpcorch_variable_is_named_in_the_job_contract_only() -> None:
    """`HPCORCH_*` names are spelled once, in hpcorch/jobenv.py (a name as a string of its
    own; prose that mentions one, like a help text, is not a second definition)."""
    found = []
    for module, path in modules():
        if module == "hpcorch.jobenv":
            continue
        tree = ast.parse(path.read_text(), str(path))
        skip = docstrings(tree)
        found += [f"{module}: {node.value}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and id(node) not in skip and re.fullmatch(r"HPCORCH_[A-Z_]+", node.value)]
    assert not found, found
