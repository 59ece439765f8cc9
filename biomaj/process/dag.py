"""BioMAJ 3's process declarations: blocks of metas of processes, and their statuses.

    db.pre.process=META0                 metas of the preprocess task
    db.remove.process=META0              metas of the removeprocess task
    BLOCKS=BLOCK1,BLOCK2                 postprocess: blocks run one after the other
    BLOCK2.db.post.process=META1,META2   the metas of a block run in parallel
    META1=PROC1,PROC2                    the processes of a meta run in sequence
    PROC1.exe=... PROC1.args=... (.name .desc .type .format .types .tags .files .expand .docker)

The session keeps one status per process, nested as BioMAJ 3 does:
``{preprocess: {META: {PROC: bool}}, postprocess: {BLOCK: {META: {PROC: bool}}}, removeprocess: ...}``.
Pre- and remove processes have no block: they are modelled as one unnamed block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from biomaj.config.properties import BankProperties, to_bool
from biomaj.errors import ConfigError

from .metadata import parse_tags

PHASE_KEYS = {"preprocess": "db.pre.process", "removeprocess": "db.remove.process"}


@dataclass(frozen=True)
class ProcessDef:
    """One process: ``<id>.*`` keys."""

    id: str
    meta: str
    name: str
    exe: str
    args: str
    desc: str = ""
    type: str = ""
    expand: bool = True
    docker: str | None = None
    format: str | None = None
    types: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    timeout: float | None = None

    @property
    def full_name(self) -> str:
        """``<META>_<PROC>``: the name of its outputs and of its progress entry."""
        return f"{self.meta}_{self.id}"


@dataclass(frozen=True)
class Meta:
    name: str
    processes: tuple[ProcessDef, ...]


@dataclass(frozen=True)
class Block:
    name: str  # "" for pre/remove processes
    metas: tuple[Meta, ...]


@dataclass(frozen=True)
class ProcessPlan:
    """The declared processes of one phase (preprocess, postprocess, removeprocess)."""

    phase: str
    blocks: tuple[Block, ...]

    @property
    def empty(self) -> bool:
        return not any(meta.processes for block in self.blocks for meta in block.metas)

    def processes(self) -> list[tuple[Block, Meta, ProcessDef]]:
        """Every process in declaration order (the order ``--process`` counts from)."""
        return [(b, m, p) for b in self.blocks for m in b.metas for p in m.processes]

    # --- statuses ----------------------------------------------------------------------------

    def status_tree(self, stored: dict | None) -> dict:
        """The session's status tree for this plan, keeping the statuses already stored."""
        stored = stored or {}
        tree: dict[str, Any] = {}
        for block in self.blocks:
            stored_block = stored.get(block.name, {}) if block.name else stored
            metas = {}
            for meta in block.metas:
                done = (stored_block or {}).get(meta.name) or {}
                metas[meta.name] = {p.id: done.get(p.id) is True for p in meta.processes}
            if block.name:
                tree[block.name] = metas
            else:
                tree.update(metas)
        return tree

    def statuses(self, tree: dict, block: Block) -> dict:
        """The {META: {PROC: bool}} part of ``tree`` for ``block``."""
        return tree[block.name] if block.name else tree

    def reset(self, tree: dict, start: str | None = None) -> dict:
        """Mark processes to run again: all of them, or from ``start`` (a block, a meta or a
        process id) to the end in declaration order. ConfigError when ``start`` names nothing."""
        tree = self.status_tree(tree)
        order = self.processes()
        if start is None:
            first = 0
        else:
            matches = [i for i, (b, m, p) in enumerate(order) if start in (b.name, m.name, p.id)]
            if not matches:
                raise ConfigError(f"Process {start} not found in {self.phase}: expected a block, meta or process "
                                  f"among {', '.join(self.names())}")
            first = matches[0]
        for block, meta, proc in order[first:]:
            self.statuses(tree, block)[meta.name][proc.id] = False
        return tree

    def names(self) -> list[str]:
        found: list[str] = []
        for block, meta, proc in self.processes():
            for name in (block.name, meta.name, proc.id):
                if name and name not in found:
                    found.append(name)
        return found


def _process(props: BankProperties, meta: str, proc: str) -> ProcessDef:
    def get(key: str) -> str | None:
        return props.get(f"{proc}.{key}")

    exe = get("exe")
    if not exe:
        raise ConfigError(f"bank {props.name}: process {proc} (in META {meta}) has no {proc}.exe")
    if get("args") is None:
        raise ConfigError(f"bank {props.name}: process {proc} (in META {meta}) has no {proc}.args (it may be empty)")
    timeout = get("timeout")
    try:
        timeout_value = float(timeout) if timeout else None
    except ValueError:
        raise ConfigError(f"bank {props.name}: {proc}.timeout={timeout!r}: expected seconds") from None
    return ProcessDef(
        id=proc, meta=meta, name=get("name") or proc, exe=exe.strip(), args=get("args") or "",
        desc=get("desc") or "", type=get("type") or "",
        expand=to_bool(get("expand")) if get("expand") is not None else True,
        docker=get("docker") or None, format=get("format") or None,
        types=tuple(t.strip() for t in (get("types") or "").split(",") if t.strip()),
        tags=parse_tags(get("tags") or ""),
        files=tuple(f.strip() for f in (get("files") or "").split(",") if f.strip()),
        timeout=timeout_value,
    )


def _meta(props: BankProperties, meta: str, listed_in: str) -> Meta:
    procs = props.get_list(meta)
    if not procs and props.get(meta) is None:
        raise ConfigError(f"bank {props.name}: META {meta} (listed in {listed_in}) is not defined")
    return Meta(meta, tuple(_process(props, meta, p) for p in procs))


def plan(props: BankProperties, phase: str) -> ProcessPlan:
    """The processes of ``phase`` declared by the bank (an empty plan when none are)."""
    if phase == "postprocess":
        blocks = []
        for block in props.get_list("BLOCKS"):
            key = f"{block}.db.post.process"
            blocks.append(Block(block, tuple(_meta(props, m, key) for m in props.get_list(key))))
        return ProcessPlan(phase, tuple(blocks))
    if phase not in PHASE_KEYS:
        raise ValueError(f"unknown process phase {phase!r}")
    key = PHASE_KEYS[phase]
    return ProcessPlan(phase, (Block("", tuple(_meta(props, m, key) for m in props.get_list(key))),))


def deal_round_robin(metas: tuple[Meta, ...] | list[Meta], threads: int) -> list[list[Meta]]:
    """BioMAJ 3's fill_tasks_in_threads: metas dealt round-robin over ``threads`` lists."""
    lanes: list[list[Meta]] = [[] for _ in range(max(1, min(threads, len(metas))))]
    for i, meta in enumerate(metas):
        lanes[i % len(lanes)].append(meta)
    return lanes
