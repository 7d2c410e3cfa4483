"""Plan a pipeline: every stage's runs and, for each, the upstream runs it consumes.

Nothing is composed or started: a stage's runs are its overrides expanded as Hydra's
basic sweeper expands them, and `needs` wire them:

- `each`: a run is matched to the upstream runs that agree with it on the match keys
  (by default the keys the upstream stage sweeps). A run that does not set a match
  key is made once per upstream value of it, with `++key=value` added, so
  `prepare: shard=0,1` + `train: lr=a,b` plans four train runs, one per (shard, lr).
- `all`: a run consumes every upstream run (a barrier, for aggregation).

Run numbers are positions in a stage's plan, so the same pipeline plans the same
directories again and what already succeeded is reused by run key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hpcorch._hydra.sweep import expand_sweep, override_key
from hpcorch.errors import ConfigError
from hpcorch.orchestrate.pipeline.config import Need, PipelineConfig, Stage


@dataclass(frozen=True)
class PlannedRun:
    """One run of a stage, with the upstream runs (stage, num) it consumes."""

    stage: str
    num: int
    overrides: tuple[str, ...]
    inputs: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class PipelinePlan:
    """Every stage's planned runs, stages in dependency order."""

    config: PipelineConfig
    runs: dict[str, list[PlannedRun]]

    def needs_of(self, stage: str) -> tuple[Need, ...]:
        """The needs of `stage`."""
        return self.config.stage(stage).needs

    def dependents(self, stage: str, num: int) -> list[PlannedRun]:
        """The runs (of every later stage, transitively) that consume run `stage` #`num`."""
        hit = {(stage, num)}
        out = []
        for later in self.config.stages:
            for run in self.runs[later.name]:
                if any(i in hit for i in run.inputs):
                    hit.add((run.stage, run.num))
                    out.append(run)
        return out


def _values(overrides: Sequence[str]) -> dict[str, str]:
    return {override_key(o): o.partition("=")[2] for o in overrides if "=" in o}


def _match_each(stage: Stage, need: Need, candidates: list[tuple[list[str], list[tuple[str, int]]]],
                upstream: list[PlannedRun]) -> list[tuple[list[str], list[tuple[str, int]]]]:
    up_values = [_values(u.overrides) for u in upstream]
    on = need.on
    if on is None:  # the keys the upstream stage sweeps: those that differ between its runs
        keys = dict.fromkeys(k for v in up_values for k in v)
        on = tuple(k for k in keys if len({v.get(k) for v in up_values}) > 1)
    groups: dict[tuple[str | None, ...], list[PlannedRun]] = {}
    for run, found in zip(upstream, up_values, strict=True):
        groups.setdefault(tuple(found.get(k) for k in on), []).append(run)
    by_present: dict[tuple[str, ...], dict[tuple[str | None, ...], list[tuple]]] = {}
    out = []
    for overrides, inputs in candidates:
        mine = _values(overrides)
        present = tuple(k for k in on if k in mine)
        if present not in by_present:  # groups indexed by the keys this kind of run sets
            index: dict[tuple[str | None, ...], list[tuple]] = {}
            for values, runs in groups.items():
                sub = tuple(v for k, v in zip(on, values, strict=True) if k in present)
                index.setdefault(sub, []).append((values, runs))
            by_present[present] = index
        matches = by_present[present].get(tuple(mine[k] for k in present), [])
        if not matches:
            raise ConfigError(f"stages.{stage.name}.needs.{need.stage}", overrides,
                              f"a run whose {list(present)} match a {need.stage} run "
                              f"(each: matched on {list(on)})")
        for values, runs in matches:
            added = [f"++{k}={v}" for k, v in zip(on, values, strict=True)
                     if k not in present and v is not None]
            out.append(([*overrides, *added], [*inputs, *((r.stage, r.num) for r in runs)]))
    return out


def plan_pipeline(config: PipelineConfig) -> PipelinePlan:
    """Every stage's runs and their inputs (see the module docstring)."""
    runs: dict[str, list[PlannedRun]] = {}
    for stage in config.stages:
        points = expand_sweep(stage.overrides, setting=f"stages.{stage.name}.overrides")
        candidates: list[tuple[list[str], list[tuple[str, int]]]] = [(p, []) for p in points]
        for need in stage.needs:
            upstream = runs[need.stage]
            if need.mode == "all":
                every = [(u.stage, u.num) for u in upstream]
                candidates = [(o, [*i, *every]) for o, i in candidates]
            else:
                candidates = _match_each(stage, need, candidates, upstream)
        runs[stage.name] = [PlannedRun(stage.name, n, tuple(o), tuple(i))
                            for n, (o, i) in enumerate(candidates)]
    return PipelinePlan(config, runs)


def graph_text(plan: PipelinePlan) -> str:
    """The stage graph as lines a person reads: `train (4 runs) <- prepare [each on shard]`."""
    lines = []
    for stage in plan.config.stages:
        n = len(plan.runs[stage.name])
        needs = ", ".join(f"{d.stage} [{d.mode}{', when ' + d.when if d.when != 'success' else ''}]"
                          for d in stage.needs)
        lines.append(f"{stage.name} ({n} run{'s' if n != 1 else ''}, {stage.app})"
                     + (f" <- {needs}" if needs else ""))
    return "\n".join(lines) + "\n"


def mermaid(plan: PipelinePlan) -> str:
    """The stage graph as a Mermaid flowchart block (renders on GitHub and GitLab)."""
    lines = ["```mermaid", "flowchart LR"]
    for stage in plan.config.stages:
        lines.append(f'  {stage.name}["{stage.name}: {len(plan.runs[stage.name])} run(s)"]')
    for stage in plan.config.stages:
        for need in stage.needs:
            arrow = "-->" if need.when == "success" else "-.->"
            lines.append(f"  {need.stage} {arrow}|{need.mode}| {stage.name}")
    lines.append("```")
    return "\n".join(lines) + "\n"
