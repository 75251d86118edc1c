"""What an ASR worker decodes next: a pure policy over what the worker has read.

One worker process holds one copy of the model and decodes one thing at a time. The shell
(workers/asr_worker.py) keeps a :class:`State` of the entries it has read and not yet handled,
asks :func:`next_action`, carries the action out, and tells the state (:meth:`State.read`,
:meth:`State.take`). The rules, in order:

1. Finals before partials; the most urgent final first (a client's ``finalize``, then ordinary
   finals, then speculative ones: a finalize never waits behind another session's speculation),
   the oldest first within a rank, up to ``batch_size`` of them together
   (cross-session batching; the batch size is 8 on CUDA, 1 on CPU by default). Finals held
   are decoded at once only when the stream was just looked at; otherwise (after a decode) the
   batch is first topped up with what waited meanwhile.
2. A partial only while no final of this worker waits: before every partial the shell has
   looked at the final jobs since its last decode (``fresh``), so a final that arrived during a
   decode goes first. A partial is an interim view; a late one is worth less than a late final.
3. A partial superseded by a newer one of its session (one held here, or the newest the
   session hash names) or by its segment's final is dropped unread: acked and deleted, never
   decoded.
4. Partials take at most ``partial_share`` of the worker's time (``ASR_PARTIAL_SHARE``): after a
   partial decoded in *d* seconds the next partial starts no sooner than *d* × (1/share − 1)
   later; meanwhile the worker waits for finals only. A decode in progress is never interrupted,
   so a final that arrives while a partial is decoded waits for it: the less of its time a worker
   spends on partials, the less often that happens. Under load partials thin out (the dropped
   ones are superseded anyway); alone, a worker's partials rarely reach the share.
5. Nothing to do: block on both streams (a small count), so a new final or partial wakes the
   worker at once.
6. Closing: no more reads; finals already read are decoded, partials held are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.schemas import AsrJob

PARTIALS_PER_READ = 4
"""Partials taken per read: enough to skip a backlog of one session's revisions in one round
trip, few enough that an idle peer is not kept from the others."""


URGENT, ORDINARY, SPECULATIVE = 0, 1, 2
"""The ranks of final jobs (rule 1): a client's ``finalize`` (or a speculative job it, or the
end-of-turn rule, committed: someone waits on it now), an ordinary final, a speculation."""


@dataclass(frozen=True)
class Final:
    entry_id: bytes
    fields: dict[bytes, bytes]
    """Undecoded: the shell decodes it (and dead-letters what does not decode)."""
    rank: int = ORDINARY
    """:data:`URGENT` first, then :data:`ORDINARY`, then :data:`SPECULATIVE` (rule 1)."""


@dataclass(frozen=True)
class Partial:
    entry_id: bytes
    job: AsrJob


@dataclass(frozen=True)
class Marks:
    """What the session hash says of a session, as of the shell's last read (``None``: unset)."""

    final_seg: int | None = None
    partial_seg: int | None = None
    partial_rev: int | None = None

    def final_out(self, segment: int) -> bool:
        """The segment's final job exists: its partials are stale."""
        return self.final_seg is not None and self.final_seg >= segment

    def supersedes(self, segment: int, rev: int) -> bool:
        """Stale: the segment is final, or a newer partial of the session was cut."""
        if self.final_out(segment):
            return True
        if self.partial_seg is None or self.partial_rev is None:
            return False
        return (self.partial_seg, self.partial_rev) > (segment, rev)


# -- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    """Read up to ``finals`` final and ``partials`` partial jobs (0: not that stream), without
    waiting; with ``block``, if none waits, wait on both streams for the first entry (up to the
    shell's read timeout), then take the rest of its burst up to the same counts. Then refresh
    the marks of every held partial's session."""

    finals: int
    partials: int = 0
    block: bool = False
    block_ms: int = 0
    """With ``block``: wait at most this long (0: the shell's read timeout)."""


@dataclass(frozen=True)
class DecodeFinal:
    final: Final


@dataclass(frozen=True)
class DecodeBatch:
    finals: tuple[Final, ...]


@dataclass(frozen=True)
class DecodePartial:
    partial: Partial


@dataclass(frozen=True)
class DropPartials:
    partials: tuple[Partial, ...]


@dataclass(frozen=True)
class Stop:
    """Closing, and nothing read is left."""


Action = Read | DecodeFinal | DecodeBatch | DecodePartial | DropPartials | Stop


@dataclass
class State:
    """What the worker has read and not handled yet."""

    batch_size: int = 1
    finals: list[Final] = field(default_factory=list)
    """In arrival order."""
    partials: list[Partial] = field(default_factory=list)
    """In arrival order."""
    marks: dict[str, Marks] = field(default_factory=dict)
    """Per session of a held partial."""
    fresh: bool = False
    """The final jobs were looked at since the last decode: none waits unread for this worker."""
    closing: bool = False
    partial_share: float = 1.0
    """The most of the worker's time partials may take (rule 4); 1 = no limit."""
    partials_from: float = 0.0
    """No partial starts before this time (the shell's monotonic clock; rule 4)."""

    def partial_decoded(self, started: float, ended: float) -> None:
        """A partial took ``ended - started`` seconds: hold the next one back (rule 4)."""
        rest = (ended - started) * (1.0 / max(self.partial_share, 1e-3) - 1.0)
        self.partials_from = ended + rest

    def read(self, finals: list[Final], partials: list[Partial], marks: dict[str, Marks]) -> None:
        """The result of a :class:`Read` (``marks``: of every session of a held partial)."""
        self.finals = sorted(self.finals + finals, key=lambda f: f.rank)  # stable: oldest first
        self.partials += partials
        self.marks = marks
        self.fresh = True

    def take(self, action: Action) -> None:
        """The action is under way: its entries are no longer held here (if it fails, a final
        stays pending in Redis and is reclaimed; a partial is lost, as a late one would be)."""
        if isinstance(action, DecodeFinal | DecodeBatch):
            done = {f.entry_id for f in _finals(action)}
            self.finals = [f for f in self.finals if f.entry_id not in done]
        elif isinstance(action, DecodePartial | DropPartials):
            gone = {p.entry_id for p in _partials(action)}
            self.partials = [p for p in self.partials if p.entry_id not in gone]
        if isinstance(action, DecodeFinal | DecodeBatch | DecodePartial):
            self.fresh = False  # time passed: finals may have arrived

    def sessions(self) -> set[str]:
        """Sessions whose marks the shell reads after a read."""
        return {p.job.session_id for p in self.partials}


def _finals(action: DecodeFinal | DecodeBatch) -> tuple[Final, ...]:
    return (action.final,) if isinstance(action, DecodeFinal) else action.finals


def _partials(action: DecodePartial | DropPartials) -> tuple[Partial, ...]:
    return (action.partial,) if isinstance(action, DecodePartial) else action.partials


def superseded(state: State) -> list[Partial]:
    """Held partials that are stale (rule 3)."""
    newest: dict[str, tuple[int, int]] = {}
    for p in state.partials:
        key = (p.job.segment, p.job.rev)
        newest[p.job.session_id] = max(newest.get(p.job.session_id, key), key)
    return [
        p
        for p in state.partials
        if (p.job.segment, p.job.rev) < newest[p.job.session_id]
        or state.marks.get(p.job.session_id, Marks()).supersedes(p.job.segment, p.job.rev)
    ]


def next_action(state: State, now: float = 0.0) -> Action:
    """The next thing to do (rules 1-6 of the module docstring); ``now``: the shell's monotonic
    clock, the same as :meth:`State.partial_decoded` was given."""
    size = max(1, state.batch_size)
    if state.finals:
        if len(state.finals) < size and not state.fresh and not state.closing:
            return Read(finals=size - len(state.finals))
        batch = tuple(state.finals[:size])
        return DecodeFinal(batch[0]) if len(batch) == 1 else DecodeBatch(batch)
    if state.closing:
        return DropPartials(tuple(state.partials)) if state.partials else Stop()
    if not state.fresh:
        return Read(finals=size)
    stale = superseded(state)
    if stale:
        return DropPartials(tuple(stale))
    if state.partials and now < state.partials_from:  # over the share: finals only, meanwhile
        return Read(
            finals=size, block=True, block_ms=max(1, int((state.partials_from - now) * 1000))
        )
    if state.partials:
        return DecodePartial(state.partials[0])
    return Read(finals=size, partials=PARTIALS_PER_READ, block=True)
