"""The registry as read from GTO tags: versions, stages, events, and the pure rules over them.

``read_state`` turns one artifact's tags into a ``RegistryState`` (each ``VersionInfo`` with
the JSON record its registration tag carries); the pure helpers choose the next version,
write and parse tag messages, and replay production assignments into the rollback stack.
``settle`` keeps two writes to one stage in different seconds, because GTO orders events by
tag time and git keeps it in whole seconds.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steps.core.config import ConfigError
from steps.registry.settings import BUMPS, FIRST_VERSION, PRODUCTION, RegistryError

# ---------------------------------------------------------------- pure helpers


def next_version(existing: Iterable[str], bump: str = "minor") -> str:
    """The version after the highest of ``existing`` (``v0.1.0`` when there is none)."""
    import semver

    if bump not in BUMPS:
        raise ConfigError(f"register.bump: one of {', '.join(BUMPS)}; got {bump!r}")
    parsed = [semver.Version.parse(v[1:]) for v in existing if v.startswith("v") and semver.Version.is_valid(v[1:])]
    if not parsed:
        return FIRST_VERSION
    return f"v{getattr(max(parsed), f'bump_{bump}')()}"


def annotate(summary: str, record: dict[str, Any]) -> str:
    """A tag message: one human line, a blank line, then the JSON record."""
    return f"{summary}\n\n{json.dumps(record, indent=1, sort_keys=True, default=str)}"


def parse_annotation(message: str) -> dict[str, Any]:
    """The JSON record of a tag message ({} for tags written by hand with ``gto``)."""
    _, _, body = message.partition("\n\n")
    try:
        record = json.loads(body)
    except json.JSONDecodeError:
        return {}
    return record if isinstance(record, dict) else {}


def production_stack(assignments: Iterable[tuple[str, str]]) -> list[str]:
    """Replay (version, action) production assignments, oldest first, into the rollback stack.

    A promotion pushes its version; a rollback to V pops down to V. The previous production is
    the entry below the current one.
    """
    stack: list[str] = []
    for version, action in assignments:
        if action == "rollback" and version in stack:
            while stack[-1] != version:
                stack.pop()
        elif not stack or stack[-1] != version:
            stack.append(version)
    return stack


# ---------------------------------------------------------------- reading the state


@dataclass(frozen=True)
class VersionInfo:
    version: str
    commit: str
    tag: str
    created_at: str
    author: str
    record: dict[str, Any]  # the registration's JSON: metrics, gate, lineage, model storage
    stages: tuple[str, ...]  # active stages
    active: bool  # False once deregistered


@dataclass(frozen=True)
class RegistryState:
    artifact: str
    versions: dict[str, VersionInfo]
    stages: dict[str, list[str]]  # stage -> versions holding it, newest assignment first
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first, with parsed records

    @property
    def production(self) -> str | None:
        return (self.stages.get(PRODUCTION) or [None])[0]

    def resolve(self, ref: str) -> VersionInfo:
        """A version by name (v1.2.3), stage (production, staging) or ``latest``."""
        if ref == "latest" and self.versions:
            ref = max(self.versions, key=_semver_key)
        elif ref in self.stages:
            ref = self.stages[ref][0]
        if ref not in self.versions:
            known = ", ".join(sorted(self.versions, key=_semver_key)) or "none registered yet"
            stages = ", ".join(self.stages) or "none"
            raise RegistryError(f"{self.artifact}: no version or stage {ref!r} (versions: {known}; stages: {stages})")
        return self.versions[ref]

    def previous_production(self) -> str | None:
        """The production before the current one, replayed from the assignment history."""
        moves = [(e["version"], e["record"].get("action", "promote")) for e in self.events
                 if e["event"] == "assignment" and e["stage"] == PRODUCTION]  # fmt: skip
        stack = production_stack(moves)
        if stack and stack[-1] == self.production:
            stack.pop()
        usable = [v for v in stack if v in self.versions and self.versions[v].active and v != self.production]
        return usable[-1] if usable else None


def _semver_key(version: str) -> tuple[int, ...]:
    nums = re.findall(r"\d+", version)
    return tuple(int(n) for n in nums[:3])


def read_state(root: Path, artifact: str) -> RegistryState:
    """Every version, active stage and event of ``artifact`` from the GTO tags."""
    from gto.constants import VersionSort
    from gto.registry import GitRegistry

    with GitRegistry.from_url(str(root)) as reg:
        art = reg.find_artifact(artifact, create_new=True)
        vstages = art.get_vstages(versions_per_stage=-1, sort=VersionSort.Timestamp) if art.versions else {}
        stages = {s: [v.version for v in vs] for s, vs in vstages.items() if vs}
        versions = {}
        for v in art.versions:
            if not v.registrations:
                continue
            reg_event = v.registrations[0]
            held = tuple(s for s, vs in stages.items() if v.version in vs)
            versions[v.version] = VersionInfo(v.version, v.commit_hexsha, reg_event.tag, reg_event.created_at.isoformat(),
                                              reg_event.author, parse_annotation(reg_event.message), held, v.is_active)  # fmt: skip
        events = sorted((e for e in art.get_events() if hasattr(e, "tag")), key=lambda e: (e.created_at, e.priority))
        history = [{"event": e.event, "version": getattr(e, "version", None), "stage": getattr(e, "stage", None),
                    "time": e.created_at, "author": e.author, "tag": e.tag, "message": e.message.partition("\n\n")[0],
                    "record": parse_annotation(e.message)} for e in events]  # fmt: skip
    return RegistryState(artifact, versions, stages, history)


def settle(state: RegistryState, stage: str) -> None:
    """Wait until the clock is past the last second in which ``stage`` changed (git tag times are whole seconds)."""
    times = [e["time"].timestamp() for e in state.events if e["stage"] == stage]
    if times:
        wait = max(times) + 1 - time.time()
        if wait > 0:
            time.sleep(wait)
