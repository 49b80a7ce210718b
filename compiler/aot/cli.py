"""``netjit aot``: compile a predict net ahead of time into a bundle folder.

    netjit aot init_net.pb predict_net.pb --input data=1,1,28,28 --name lenet -o build/lenet
    netjit aot init_net.pb predict_net.pb --input data=8,3,224,224 --target x86-64-v3 -o build/r50
    netjit aot model.minidb -o build/model       # a predictor_exporter export (or a MetaNetDef .pb)

The build runs in a child process (see netjit.compiler.aot); a net that cannot be bundled fails
with the op index and type before anything is written.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from netjit.compiler.aot.common import AotError, check_name, parse_input
from netjit.compiler.aot.cpu import TARGETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("init_net", help="the init net (.pb or .pbtxt): parameters become NAME.weights.bin; "
                                         "alone, a predictor export: a DB from predictor_exporter.save_to_db "
                                         "or a MetaNetDef .pb (inputs then default to its exported shapes)")
    parser.add_argument("predict_net", nargs="?", help="the predict net (.pb or .pbtxt)")
    parser.add_argument("--db-type", help="DB type of a predictor export (default minidb)")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=D0,D1,...[:DTYPE]",
                        help="shape (and dtype, default float32) of an input the init net does not fill; "
                             "repeat for several")
    parser.add_argument("--name", help="bundle name, a C identifier prefixing every symbol (default: the "
                                       "output folder's name)")
    parser.add_argument("-o", "--output", help="output folder (default: build/NAME)")
    parser.add_argument("--target", choices=TARGETS, default="native",
                        help="CPU to generate code for (default: this machine's)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    from netjit.cli import CommandError
    from netjit.compiler.aot import build_bundle
    try:
        name = args.name or (Path(args.output).name if args.output else None)
        if not name:
            raise AotError("give --name (a C identifier) or -o FOLDER")
        check_name(name)
        out = Path(args.output or Path("build") / name)
        inputs = {}
        for text in args.input:
            blob, shape, dtype = parse_input(text)
            inputs[blob] = (shape, dtype)
        t0 = time.perf_counter()
        if args.db_type and args.predict_net:
            raise AotError("--db-type is for a predictor export given alone (netjit aot model.minidb ...)")
        info = build_bundle(args.init_net, args.predict_net, inputs, name, out, args.target,
                            progress=not args.quiet, db_type=args.db_type)
    except AotError as err:
        raise CommandError(str(err)) from err
    ins = ", ".join(f"{t['name']}: {t['dtype']}{t['shape']}" for t in info["inputs"])
    outs = ", ".join(f"{t['name']}: {t['dtype']}{t['shape']}" for t in info["outputs"])
    print(f"wrote {out}/ in {time.perf_counter() - t0:.1f}s: {name}.so ({len(info['steps'])} kernels, "
          f"target {info['target']}), {name}.h, {name}.weights.bin ({info['weights']['bytes']} B), bundle.json; "
          f"scratch {info['scratch_bytes']} B; inputs {ins}; outputs {outs}")
    return 0
