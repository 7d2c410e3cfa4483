"""What differs between two configs or two environments, in lines a person can read.

    packages.numpy: 2.4.6 -> 2.3.5
    packages.torch: added 2.13.0
    git.commit: 967d2b45fca1 -> 0b1c2d3e4f5a
    lr: 0.1 -> 0.05

Environments are compared as summaries: a run's fingerprint without what is
different in every run by design (its hash seed, log name, splits), and a
set of runs as the values they share, or `varies: a | b` where they do not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from hpcorch.identity import DEFAULT_KEY_EXCLUDE, canonical_json

#: Fingerprint entries that differ per run by design, or only say where files lay.
ENV_IGNORED = frozenset({"hash_seed", "job_name", "warnings", "repro", "executable",
                         "git.root", "git.untracked_files"})
#: Display order of environment sections; others follow alphabetically.
_SECTION_ORDER = ("python", "implementation", "platform", "hpcorch", "packages_hash", "packages",
                  "git", "container", "host", "cpu", "gpu", "mpi")
_MISSING = object()


class ChangeKind(str, Enum):
    """How one key differs."""

    ADDED = "added"
    """Only the second side has it."""
    REMOVED = "removed"
    """Only the first side has it."""
    CHANGED = "changed"
    """Both have it, with different values."""


@dataclass(frozen=True)
class Change:
    """One differing key, with its value on each side (None for an absent side)."""

    key: str
    kind: ChangeKind
    before: Any = None
    after: Any = None

    def line(self) -> str:
        """`key: before -> after`, `key: added X`, `key: removed X`."""
        if self.kind is ChangeKind.ADDED:
            return f"{self.key}: added {_text(self.after)}"
        if self.kind is ChangeKind.REMOVED:
            return f"{self.key}: removed (was {_text(self.before)})"
        return f"{self.key}: {_text(self.before)} -> {_text(self.after)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"key": self.key, "kind": self.kind.value, "before": self.before,
                "after": self.after}


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value if value else "''"
    if isinstance(value, (list, tuple, dict)):
        return canonical_json(value)
    return repr(value) if isinstance(value, float) else str(value)


def flatten(data: Mapping[str, Any], prefix: str = "", depth: int | None = None) -> dict[str, Any]:
    """Nested mappings as `a.b.c` keys (lists stay values); `depth` limits the nesting followed."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and (depth is None or depth > 1):
            out.update(flatten(value, f"{name}.", None if depth is None else depth - 1))
        else:
            out[name] = value
    return out


def _order(key: str) -> tuple[int, str]:
    head = key.split(".", 1)[0]
    rank = _SECTION_ORDER.index(head) if head in _SECTION_ORDER else len(_SECTION_ORDER)
    return rank, key


def diff_flat(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    """The changes from `before` to `after` (flat mappings), in display order."""
    changes = []
    for key in sorted(set(before) | set(after), key=_order):
        a, b = before.get(key, _MISSING), after.get(key, _MISSING)
        if a is _MISSING:
            changes.append(Change(key, ChangeKind.ADDED, after=b))
        elif b is _MISSING:
            changes.append(Change(key, ChangeKind.REMOVED, before=a))
        elif canonical_json(a) != canonical_json(b):
            changes.append(Change(key, ChangeKind.CHANGED, a, b))
    return changes


def environment_of(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """A run's fingerprint as flat `section.key` entries, without the per-run ones."""
    flat = flatten(fingerprint, depth=2)
    return {k: v for k, v in flat.items()
            if k not in ENV_IGNORED and k.split(".", 1)[0] not in ENV_IGNORED}


def environment_summary(fingerprints: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The flat environment shared by runs; where they disagree, `varies: a | b`."""
    values: dict[str, dict[str, Any]] = {}
    for fp in fingerprints:
        if not fp:
            continue  # a run without a record has no environment to tell
        for key, value in environment_of(fp).items():
            values.setdefault(key, {})[canonical_json(value)] = value
    summary: dict[str, Any] = {}
    for key in sorted(values, key=_order):
        seen = values[key]
        summary[key] = next(iter(seen.values())) if len(seen) == 1 else \
            "varies: " + " | ".join(sorted(_text(v) for v in seen.values()))
    return summary


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flat `section.key` entries as `{section: {key: value}}` (one level, for YAML files)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        head, dot, rest = key.partition(".")
        if dot:
            out.setdefault(head, {})[rest] = value
        else:
            out[key] = value
    return out


def unnest(nested: Mapping[str, Any]) -> dict[str, Any]:
    """The reverse of `nest`."""
    return flatten(nested, depth=2)


def experiment_config(config: Mapping[str, Any],
                      exclude: Sequence[str] | None = None) -> dict[str, Any]:
    """A run's config as flat keys, without the where-it-ran nodes and without `seed`."""
    if exclude is None:
        node = config.get("hpcorch")
        listed = node.get("key_exclude") if isinstance(node, Mapping) else None
        exclude = tuple(listed) if listed else DEFAULT_KEY_EXCLUDE
    dropped = set(exclude) | {"seed"}
    return flatten({k: v for k, v in config.items() if k not in dropped})


def execution_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The where-and-how nodes of a config (provider, resources, hpcorch...), flat."""
    experiment = set(experiment_config(config))
    return {k: v for k, v in flatten(config).items() if k not in experiment and k != "seed"}
