"""The ``netjit`` command line.

    netjit --version
    netjit show predict_net.pb [init_net.pb ...]      # a readable listing of each net
    netjit draw predict_net.pb -o net.svg [--minimal]  # .svg/.png/.pdf need Graphviz; .dot does not

Adding a subcommand
-------------------
A subcommand is two functions: ``add_arguments(parser)`` declares its options on the
subcommand's ``argparse.ArgumentParser``, and ``run(args) -> int`` does the work and returns the
exit status. Register it with one entry in the table at the bottom of this module, either naming
a module that defines ``add_arguments`` and ``run`` (imported only when that subcommand is used,
so a heavy module does not slow down every other command)::

    register_command("bench", module="netjit.bench", help="time RunNet against RunNetOnce")

or passing the functions themselves::

    register_command("mnist-db", add_mnist_arguments, run_mnist, help="write the tutorial MNIST DB")

Raise :class:`CommandError` for a failure the user can fix (bad path, bad option); ``main`` prints
its message and returns 1. File-not-found and malformed-protobuf errors are reported the same way.

>>> main(["show", "predict_net.pb"])  # doctest: +SKIP
net "torch-jit-export_predict": 11 ops
...
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from netjit.proto import caffe2_pb2
from netjit.proto.args import argument_value
from netjit.proto.io import ProtoFormatError, load_net

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A failure a subcommand reports to the user as one line, without a traceback."""


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line and its two functions (or the module that holds them)."""
    help: str
    add_arguments: AddArguments | None = None
    run: Run | None = None
    module: str | None = None

    def functions(self) -> tuple[AddArguments, Run]:
        if self.module is None:
            return self.add_arguments, self.run
        loaded = importlib.import_module(self.module)
        return loaded.add_arguments, loaded.run


COMMANDS: dict[str, Command] = {}


def register_command(name: str, add_arguments: AddArguments | None = None, run: Run | None = None, *,
                     module: str | None = None, help: str = "") -> None:
    """Add subcommand ``name``: give ``add_arguments`` and ``run``, or a ``module`` defining both.

    >>> register_command("hello", lambda p: None, lambda a: print("hi") or 0, help="say hi")
    >>> main(["hello"])
    hi
    0
    >>> del COMMANDS["hello"]
    """
    if (module is None) == (add_arguments is None or run is None):
        raise ValueError(f"command {name!r}: pass add_arguments and run, or module, not both")
    if name in COMMANDS:
        raise ValueError(f"command {name!r} is already registered")
    COMMANDS[name] = Command(help=help, add_arguments=add_arguments, run=run, module=module)


def package_version() -> str:
    """The installed netjit version (``0.0.0+src`` in a never-installed source tree)."""
    try:
        return version("netjit")
    except PackageNotFoundError:
        return "0.0.0+src"


# --- show -------------------------------------------------------------------------------------

_MAX_LIST_ITEMS = 8


def _format_scalar(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return repr(value.decode("utf-8"))
        except UnicodeDecodeError:
            return repr(value) if len(value) <= 32 else f"<{len(value)} bytes>"
    if isinstance(value, caffe2_pb2.NetDef):
        return f"<net {value.name!r}: {len(value.op)} ops>"
    if isinstance(value, float):
        return f"{value:.7g}"
    return str(value)


def format_argument(arg: caffe2_pb2.Argument) -> str:
    """``name=value`` for one Argument, long lists shortened.

    >>> from netjit.proto.args import make_argument
    >>> format_argument(make_argument("values", [0.5] * 100))
    'values=[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, ... (100 floats)]'
    """
    value = argument_value(arg)
    if isinstance(value, list):
        kind = next(f for f in ("floats", "ints", "strings", "nets") if len(getattr(arg, f)))
        shown = ", ".join(_format_scalar(v) for v in value[:_MAX_LIST_ITEMS])
        more = f", ... ({len(value)} {kind})" if len(value) > _MAX_LIST_ITEMS else ""
        return f"{arg.name}=[{shown}{more}]"
    return f"{arg.name}={'[]' if value is None else _format_scalar(value)}"


def _format_device(device: caffe2_pb2.DeviceOption) -> str:
    kind = caffe2_pb2.DeviceType.Name(device.device_type) \
        if device.device_type in caffe2_pb2.DeviceType.values() else str(device.device_type)
    text = f"{kind}:{device.cuda_gpu_id}" if device.device_type == caffe2_pb2.CUDA else kind
    if device.HasField("random_seed"):
        text += f" seed={device.random_seed}"
    if device.node_name:
        text += f" node={device.node_name}"
    return text


def _text(name: str | bytes) -> str:
    # protobuf hands back a name that is not valid UTF-8 as bytes; show it rather than fail.
    return name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else name


def _names(blobs: Sequence[str], limit: int | None) -> str:
    blobs = [_text(b) for b in blobs]
    if not blobs:
        return "(none)"
    if limit is not None and len(blobs) > limit:
        return ", ".join(blobs[:limit]) + f", ... ({len(blobs) - limit} more)"
    return ", ".join(blobs)


def format_net(net: caffe2_pb2.NetDef, max_names: int | None = 16) -> str:
    """A readable listing: the net's header, then one line per op (index, type, inputs -> outputs, args).

    External input/output lists longer than ``max_names`` are shortened (None: never).

    >>> net = caffe2_pb2.NetDef(name="n", external_input=["X"], external_output=["Y"])
    >>> _ = net.op.add(type="Relu", input=["X"], output=["Y"])
    >>> print(format_net(net))
    net "n": 1 op
      external inputs (1): X
      external outputs (1): Y
      [0] Relu  X -> Y
    """
    head = f'net "{net.name}": {len(net.op)} op{"" if len(net.op) == 1 else "s"}'
    if net.type:
        head += f", type {net.type}"
    if net.num_workers:
        head += f", {net.num_workers} workers"
    lines = [head,
             f"  external inputs ({len(net.external_input)}): {_names(net.external_input, max_names)}",
             f"  external outputs ({len(net.external_output)}): {_names(net.external_output, max_names)}"]
    if net.HasField("device_option") and net.device_option.ByteSize():
        lines.append(f"  device: {_format_device(net.device_option)}")
    if net.arg:
        lines.append(f"  args: {' '.join(format_argument(a) for a in net.arg)}")
    width = len(str(max(len(net.op) - 1, 0)))
    for index, op in enumerate(net.op):
        line = f"  [{index:>{width}}] {op.type}"
        if op.name:
            line += f' "{op.name}"'
        line += f"  {', '.join(map(_text, op.input)) or '()'} -> {', '.join(map(_text, op.output)) or '()'}"
        extras = [format_argument(a) for a in op.arg]
        if op.engine:
            extras.append(f"engine={op.engine}")
        if op.HasField("device_option") and op.device_option.ByteSize():
            extras.append(f"device={_format_device(op.device_option)}")
        if op.control_input:
            extras.append(f"control_input=[{', '.join(map(_text, op.control_input))}]")
        if op.is_gradient_op:
            extras.append("gradient")
        if extras:
            line += "  " + " ".join(extras)
        lines.append(line)
    return "\n".join(lines)


def _add_show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL", help="NetDef files, .pb or .pbtxt")
    parser.add_argument("--all", action="store_true",
                        help="list every external input/output (by default long lists are shortened)")


def _run_show(args: argparse.Namespace) -> int:
    for i, path in enumerate(args.models):
        if i:
            print()
        if len(args.models) > 1:
            print(f"# {path}")
        print(format_net(load_net(path), max_names=None if args.all else 16))
    return 0


# --- draw -------------------------------------------------------------------------------------

def _add_draw_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a NetDef file, .pb or .pbtxt")
    parser.add_argument("-o", "--output", required=True,
                        help="output file; the extension picks the format: .dot (no Graphviz needed), "
                             ".svg, .png, .pdf (need Graphviz's dot)")
    parser.add_argument("--minimal", action="store_true",
                        help="ops only, with edges implied through other ops dropped")
    parser.add_argument("--rankdir", default="LR", choices=["LR", "TB", "RL", "BT"],
                        help="layout direction (default LR)")


def _run_draw(args: argparse.Namespace) -> int:
    from netjit import net_drawer  # pydot is an optional extra: import it only for this command

    net = load_net(args.model)
    if args.minimal:
        graph = net_drawer.GetPydotGraphMinimal(net, rankdir=args.rankdir, minimal_dependency=True)
    else:
        graph = net_drawer.GetPydotGraph(net, rankdir=args.rankdir)
    try:
        path = net_drawer.write_graph(graph, args.output)
    except (net_drawer.GraphvizNotFoundError, ValueError) as error:
        raise CommandError(str(error)) from error
    print(f"wrote {path} ({len(net.op)} ops)")
    return 0


# --- main -------------------------------------------------------------------------------------

def build_parser(selected: str | None = None, all_options: bool = False) -> argparse.ArgumentParser:
    """The argument parser. Only ``selected``'s options are declared (every command's with
    ``all_options``), so that a lazily registered module is imported only when it is used."""
    parser = argparse.ArgumentParser(prog="netjit",
                                     description="Run, inspect and compile Caffe2 networks.")
    parser.add_argument("--version", action="version", version=f"netjit {package_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        if all_options or name == selected:
            command.functions()[0](sub)
    return parser


def _selected_command(argv: Sequence[str]) -> str | None:
    # The first non-option word names the subcommand; the top level has no options taking values.
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = _selected_command(argv)
    parser = build_parser(selected)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors: keep main() returning
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    run = COMMANDS[args.command].functions()[1]
    try:
        return run(args)
    except BrokenPipeError:
        # `netjit show big.pb | head`: the reader left; stop quietly, and keep Python's exit-time
        # flush of stdout from raising again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except (CommandError, ProtoFormatError, OSError) as error:
        print(f"netjit {args.command}: error: {_describe(error)}", file=sys.stderr)
        return 1


def _describe(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return str(error)


# The subcommand table: one entry per command.
register_command("show", _add_show_arguments, _run_show, help="print a .pb/.pbtxt net readably")
register_command("draw", _add_draw_arguments, _run_draw, help="draw a net as .dot, .svg, .png or .pdf")
register_command("mnist-db", module="netjit.mnist_data",
                 help="write the tutorial's MNIST train/test DBs (a split of the real 10,000 test digits)")
register_command("bench", module="netjit.bench",
                 help="time RunNet, RunNetOnce, the reference executor and the compiled net per call")
register_command("cache", module="netjit.kernel_cache",
                 help="show the on-disk kernel cache, or trim it (--older-than DAYS, --max-size MB, --clear)")
register_command("warmup", module="netjit.compiler.codegen.prebuild",
                 help="compile the library's kernels now (after install), in parallel, instead of on first use")
register_command("aot", module="netjit.compiler.aot.cli",
                 help="compile a predict net ahead of time into a bundle (NAME.so, NAME.h, weights, bundle.json)")

if __name__ == "__main__":
    sys.exit(main())
