"""A pipeline's config: stages (ordinary Hydra apps with their sweeps) wired by `needs`.

    name: example
    stages:
      prepare:
        app: prepare.py
        sweep: {shard: [0, 1]}
      train:
        app: train.py
        overrides: [epochs=10]
        sweep: {lr: [0.1, 0.03]}
        provider: local                  # or {name: slurm, partition: debug}
        resources: {cpus: 1}
        needs: {prepare: each}           # one train run per prepare run (per shard)
      evaluate:
        app: evaluate.py
        needs: {train: {mode: all, when: always}}

Command-line overrides are scoped by stage (`train.lr=1e-3,1e-4`,
`train.provider=slurm`); every check happens here, before anything runs, with one
message naming the setting, its value and what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpcorch._hydra.sweep import expand_sweep, override_key
from hpcorch.errors import ConfigError

MODES = ("each", "all")
WHEN = ("success", "always")
_STAGE_KEYS = ("app", "overrides", "sweep", "provider", "resources", "needs")


@dataclass(frozen=True)
class Need:
    """How a stage consumes one upstream stage."""

    stage: str
    mode: str = "each"
    """each: one run per matching upstream run (like Slurm's aftercorr); all: a barrier."""
    on: tuple[str, ...] | None = None
    """The override keys an `each` need matches on (default: those the upstream sweeps)."""
    when: str = "success"
    """success: only on SUCCEEDED upstream runs; always: once they ended, on those that did."""


@dataclass(frozen=True)
class Stage:
    """One stage: a Hydra app, its override list (sweeps included) and what it needs."""

    name: str
    app: str
    overrides: tuple[str, ...] = ()
    needs: tuple[Need, ...] = ()


@dataclass(frozen=True)
class PipelineConfig:
    """A whole pipeline, stages in an order where every need comes first."""

    name: str
    directory: str
    stages: tuple[Stage, ...] = ()
    source: str = ""
    cli: tuple[str, ...] = field(default=())

    def stage(self, name: str) -> Stage:
        """The stage called `name`."""
        return next(s for s in self.stages if s.name == name)


def _values(value: Any) -> str:
    """A sweep mapping's value as Hydra's sweep text: [0, 1] -> `0,1`."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _flatten(prefix: str, node: Any) -> list[str]:
    """`resources: {cpus: 2}` -> [`resources.cpus=2`]."""
    if isinstance(node, Mapping):
        out = []
        for key, value in node.items():
            out += _flatten(f"{prefix}.{key}", value)
        return out
    return [f"{prefix}={_values(node)}"]


def _stage_overrides(where: str, raw: Mapping[str, Any]) -> list[str]:
    overrides = raw.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{where}.overrides", overrides, "a list of Hydra overrides")
    out = list(overrides)
    sweep = raw.get("sweep") or {}
    if not isinstance(sweep, Mapping):
        raise ConfigError(f"{where}.sweep", sweep, "a mapping of key: values (a list or a,b)")
    out += [f"{key}={_values(value)}" for key, value in sweep.items()]
    provider = raw.get("provider")
    if isinstance(provider, Mapping):
        provider = dict(provider)
        name = provider.pop("name", None)
        if name is None:
            raise ConfigError(f"{where}.provider", raw.get("provider"), "a provider name or a "
                              "mapping with `name:` (local, slurm, sge, ray, mpi, ...)")
        out += [f"provider={name}", *_flatten("provider", provider)]
    elif provider is not None:
        out.append(f"provider={provider}")
    if raw.get("resources") is not None:
        if not isinstance(raw["resources"], Mapping):
            raise ConfigError(f"{where}.resources", raw["resources"], "a mapping (cpus: 2, ...)")
        out += _flatten("resources", raw["resources"])
    return out


def _needs(where: str, raw: Any, names: Sequence[str]) -> tuple[Need, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}.needs", raw, "a mapping of upstream stage: each|all "
                          "(or {mode, on, when})")
    needs = []
    for upstream, how in raw.items():
        if upstream not in names:
            raise ConfigError(f"{where}.needs", upstream, f"one of the stages {list(names)}")
        spec = {"mode": how} if isinstance(how, str) else dict(how or {})
        unknown = set(spec) - {"mode", "on", "when"}
        if unknown:
            raise ConfigError(f"{where}.needs.{upstream}", sorted(unknown), "keys mode, on, when")
        mode, when = spec.get("mode", "each"), spec.get("when", "success")
        if mode not in MODES:
            raise ConfigError(f"{where}.needs.{upstream}.mode", mode, f"one of {list(MODES)}")
        if when not in WHEN:
            raise ConfigError(f"{where}.needs.{upstream}.when", when, f"one of {list(WHEN)}")
        on = spec.get("on")
        if on is not None:
            on = (on,) if isinstance(on, str) else tuple(str(k) for k in on)
        needs.append(Need(stage=str(upstream), mode=mode, on=on, when=when))
    return tuple(needs)


def _ordered(stages: list[Stage]) -> tuple[Stage, ...]:
    """Stages in dependency order (stable: the file's order where free); refuses cycles."""
    done: list[Stage] = []
    pending = list(stages)
    while pending:
        ready = [s for s in pending if all(n.stage in {d.name for d in done} for n in s.needs)]
        if not ready:
            raise ConfigError("stages", [s.name for s in pending],
                              "needs without a cycle (these stages wait on each other)")
        done.append(ready[0])
        pending.remove(ready[0])
    return tuple(done)


def _scope(cli: Sequence[str], names: Sequence[str]) -> dict[str, list[str]]:
    """`train.lr=1e-3,1e-4` -> {"train": ["lr=1e-3,1e-4"]}; anything else is refused."""
    scoped: dict[str, list[str]] = {n: [] for n in names}
    for item in cli:
        prefix = item[: len(item) - len(item.lstrip("+~"))]
        stage, dot, rest = item[len(prefix):].partition(".")
        if not dot or stage not in scoped or "=" not in rest and not prefix.startswith("~"):
            raise ConfigError("override", item, f"STAGE.key=value with STAGE one of {list(names)}"
                              " (e.g. train.lr=1e-3,1e-4 or train.provider=slurm)")
        scoped[stage].append(prefix + rest)
    return scoped


def merge_overrides(base: Sequence[str], extra: Sequence[str]) -> list[str]:
    """`base` with each of `extra` replacing the override of the same key, else appended."""
    out = list(base)
    for item in extra:
        key = override_key(item)
        same = [i for i, o in enumerate(out) if override_key(o) == key]
        if same:
            out[same[0]] = item
            for i in reversed(same[1:]):
                del out[i]
        else:
            out.append(item)
    return out


def load_pipeline(path: str | os.PathLike[str], cli: Sequence[str] = (),
                  directory: str | None = None) -> PipelineConfig:
    """Read, check and order a pipeline file; `cli`: stage-scoped overrides."""
    source = Path(path)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("pipeline", str(path), f"a readable YAML file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError("pipeline", str(path), f"valid YAML ({exc})") from None
    return pipeline_from(raw, cli, source=str(source.resolve()), directory=directory)


def pipeline_from(raw: Any, cli: Sequence[str] = (), *, source: str = "",
                  directory: str | None = None) -> PipelineConfig:
    """A checked PipelineConfig from the file's data (see `load_pipeline`)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("stages"), Mapping) \
            or not raw["stages"]:
        raise ConfigError("stages", None if not isinstance(raw, Mapping) else raw.get("stages"),
                          "a mapping of stage name: {app, overrides, sweep, needs, ...}")
    unknown = set(raw) - {"name", "dir", "stages"}
    if unknown:
        raise ConfigError("pipeline", sorted(unknown), "top-level keys name, dir, stages")
    name = str(raw.get("name") or Path(source).stem or "pipeline")
    names = [str(n) for n in raw["stages"]]
    scoped = _scope(cli, names)
    stages = []
    for stage_name, body in raw["stages"].items():
        where = f"stages.{stage_name}"
        if not isinstance(body, Mapping) or not isinstance(body.get("app"), str):
            raise ConfigError(f"{where}.app", None if not isinstance(body, Mapping)
                              else body.get("app"), "the path of the stage's Hydra app script")
        unknown = set(body) - set(_STAGE_KEYS)
        if unknown:
            raise ConfigError(where, sorted(unknown), f"keys {list(_STAGE_KEYS)}")
        overrides = merge_overrides(_stage_overrides(where, body), scoped[str(stage_name)])
        expand_sweep(overrides, setting=f"{where}.overrides")  # refuse a bad one now
        stages.append(Stage(name=str(stage_name), app=body["app"], overrides=tuple(overrides),
                            needs=_needs(where, body.get("needs"), names)))
    for stage in stages:
        if any(n.stage == stage.name for n in stage.needs):
            raise ConfigError(f"stages.{stage.name}.needs", stage.name, "other stages only")
    directory = directory or str(raw.get("dir") or os.path.join("pipelines", name))
    return PipelineConfig(name=name, directory=os.path.abspath(directory),
                          stages=_ordered(stages), source=source, cli=tuple(cli))
