"""What ``RecurrentNetwork`` and its gradient run on: step workspaces, links and step-net runners.

Caffe2's RecurrentNetwork runs a small *step net* once per timestep, each time in its own child
workspace of the op's workspace (so the backward pass finds every step's intermediates). A *link*
``(internal, external, offset, window)`` binds the step-net blob ``internal`` to the slice
``external[t + offset : t + offset + window]`` of a sequence blob; Caffe2 makes the internal blob
share the slice's memory. Here a link is bound as a numpy view before the step runs, and an
internal blob the step wrote into a fresh array is copied into its slice afterwards: the same
values, with step nets that stay ordinary (compilable) nets.

Step nets run through the executor :func:`netjit.compiler.runner.make_runner` picks
(``NETJIT_EXECUTOR``, compiled by default). A step net is planned and compiled once per input
signature and the per-workspace runners are kept in the op's step-workspaces blob, so a repeated
run costs one generated-driver call per timestep.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from netjit.proto import caffe2_pb2
from netjit.runtime.workspace import Workspace


@dataclass(frozen=True)
class Link:
    internal: str
    external: str
    offset: int
    window: int = 1


@dataclass
class StepWorkspaces:
    """The blob RecurrentNetwork's last output holds (Caffe2's ScratchWorkspaces): one child
    workspace per timestep, and a runner per (workspace, net) made on first use."""
    workspaces: list[Workspace] = field(default_factory=list)
    runners: dict[tuple[int, str, str], Any] = field(default_factory=dict)

    def workspace(self, t: int, parent: Workspace, label: str) -> Workspace:
        while len(self.workspaces) <= t:
            k = len(self.workspaces)
            self.workspaces.append(Workspace(f"{parent.name}/{label}/step{k}", parent.root_folder, parent=parent))
        ws = self.workspaces[t]
        if ws.parent is not parent:
            # The op ran in another workspace than last time: start over (no stale runners).
            self.workspaces[t] = ws = Workspace(ws.name, parent.root_folder, parent=parent)
            self.runners = {k: r for k, r in self.runners.items() if k[0] != t}
        return ws

    def run(self, t: int, ws: Workspace, net: caffe2_pb2.NetDef, key: str, executor: str) -> None:
        """Run ``net`` in step workspace ``ws``; ``key`` names the net's content (net_key), so another
        op or a rebuilt model writing the same blob never reuses a runner made for a different net."""
        from netjit.compiler.runner import make_runner  # late: the op registry must not import the compiler

        runner = self.runners.get((t, key, executor))
        if runner is None or runner.ws is not ws:
            runner = self.runners[(t, key, executor)] = make_runner(net, ws, executor)
        runner.run()

    def __repr__(self) -> str:
        return f"StepWorkspaces({len(self.workspaces)} step workspaces)"


def read_links(args: Any, internal: str, external: str, offset: str, window: str | None) -> list[Link]:
    """Links from the op's parallel list arguments (window defaults to 1 per link)."""
    ins, exts, offs = list(args.get(internal) or []), list(args.get(external) or []), list(args.get(offset) or [])
    wins = list(args.get(window) or []) if window else []
    wins = wins or [1] * len(offs)
    if not len(ins) == len(exts) == len(offs) == len(wins):
        raise ValueError(f"{internal}/{external}/{offset}{'/' + window if window else ''} must have one entry "
                         f"per link, got {len(ins)}/{len(exts)}/{len(offs)}/{len(wins)}")
    return [Link(_text(i), _text(e), int(o), int(w)) for i, e, o, w in zip(ins, exts, offs, wins)]


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def net_argument(args: Any, name: str) -> caffe2_pb2.NetDef | None:
    """A NetDef argument given either as a NetDef (``n``) or as its text format (``s``), as Caffe2's
    extractNetDef accepts both; None when absent or empty."""
    value = args.get(name)
    if value is None or value == [] or value == b"" or value == "":
        return None
    if isinstance(value, caffe2_pb2.NetDef):
        return value
    from google.protobuf import text_format

    net = caffe2_pb2.NetDef()
    try:
        text_format.Parse(_text(value), net)
    except text_format.ParseError as err:
        raise ValueError(f"argument {name!r} is not a NetDef in text format: {err}") from None
    return net


def prepare_step_net(net: caffe2_pb2.NetDef, timestep: str, links: Sequence[Link]) -> caffe2_pb2.NetDef:
    """A copy of a step net declaring the timestep and the linked blobs as external inputs (what
    Caffe2's op adds before it creates the net)."""
    out = caffe2_pb2.NetDef()
    out.CopyFrom(net)
    declared = set(out.external_input)
    for name in [timestep] + [link.internal for link in links]:
        if name not in declared:
            out.external_input.append(name)
            declared.add(name)
    return out


def net_key(net: caffe2_pb2.NetDef) -> str:
    """A short digest of a step net's content."""
    return hashlib.blake2b(net.SerializeToString(), digest_size=12).hexdigest()


def written_blobs(net: caffe2_pb2.NetDef) -> set[str]:
    return {o for op in net.op for o in op.output}


def bind_links(ws: Workspace, links: Sequence[Link], externals: dict[str, np.ndarray], t: int) -> None:
    """Bind each link's internal blob to its slice of the external sequence. A blob linked twice (a
    gradient passed straight through to the input sequence's gradient) is read from its first link
    and copied to the others by store_links."""
    seen: set[str] = set()
    for link in links:
        if link.internal in seen:
            continue
        seen.add(link.internal)
        ext = externals[link.external]
        start = t + link.offset
        ws.blobs[link.internal] = ext[start:start + link.window]


def store_links(ws: Workspace, links: Sequence[Link], externals: dict[str, np.ndarray], t: int) -> None:
    """Copy every linked blob the step replaced by a new array into its slice of the sequence."""
    for link in links:
        value = ws.blobs.get(link.internal)
        ext = externals[link.external]
        start = t + link.offset
        dst = ext[start:start + link.window]
        if value is None or (isinstance(value, np.ndarray) and np.may_share_memory(value, dst)):
            continue
        value = np.asarray(value)
        if value.size != dst.size:
            raise ValueError(f"step blob {link.internal!r} has shape {list(value.shape)} but its link to "
                             f"{link.external!r} holds {list(dst.shape)} per step")
        dst[...] = value.reshape(dst.shape)


def initial_states(init: np.ndarray, seq_len: int, batch: int, name: str) -> np.ndarray:
    """The (T + k) x N x D states array of one recurrent state, its first k steps from the initial
    value: [k, N, D] or [N, D] copied, [D] repeated over the batch (Caffe2's initializeRecurrentInput)."""
    init = np.asarray(init)
    if not 1 <= init.ndim <= 3:
        raise ValueError(f"initial recurrent state {name!r} must be 1-D to 3-D, got {list(init.shape)}")
    k = init.shape[0] if init.ndim == 3 else 1
    d = init.shape[-1]
    if init.ndim >= 2 and init.shape[-2] != batch:
        raise ValueError(f"initial recurrent state {name!r} {list(init.shape)} does not match the batch "
                         f"size {batch}")
    states = np.empty((seq_len + k, batch, d), init.dtype)
    states[:k] = init.reshape(k, batch, d) if init.ndim >= 2 else init.reshape(1, 1, d)
    return states
