"""Regenerate the checked-in ``*_pb2.py`` modules from the ``.proto`` files next to this script.

One command, run from the repository root (needs ``grpcio-tools``, the ``regen`` extra)::

    python proto/regen.py            # rewrite proto/*_pb2.py in place
    python proto/regen.py --check    # exit 1 if the checked-in modules differ from a fresh build

Why the temporary include tree: protoc names a generated import after the imported file's path
under the include root. Compiling from ``proto/`` directly would make ``metanet_pb2`` do
``import caffe2_pb2``, which fails inside the ``netjit.proto`` package. So the ``.proto`` files are
copied under ``<tmp>/netjit/proto/`` and compiled with ``<tmp>`` as the root: the generated code then
imports ``from netjit.proto import caffe2_pb2``, and ``.proto`` imports are written as
``import "netjit/proto/caffe2.proto";``.

The protoc bundled with grpcio-tools decides the generated code's runtime check (the
``Protobuf Python Version`` header): grpcio-tools 1.85 emits 7.35.1, which is what pyproject's
``protobuf>=7.35.1,<8`` pin allows.
"""
from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
# Dependencies first only for readability; protoc resolves imports itself.
PROTO_FILES = ("caffe2.proto", "caffe2_legacy.proto", "predictor_consts.proto", "metanet.proto")
INCLUDE_PREFIX = "netjit/proto"


def generated_name(proto_file: str) -> str:
    """The module file protoc writes for a ``.proto`` file.

    >>> generated_name("caffe2.proto")
    'caffe2_pb2.py'
    """
    return proto_file[: -len(".proto")] + "_pb2.py"


def protoc_version() -> str:
    """The version string of the protoc bundled with grpcio-tools, e.g. ``'libprotoc 35.1'``."""
    result = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "--version"],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Compile every ``.proto`` in ``proto_dir`` into ``out_dir``; return the written module paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="netjit-regen-") as tmp:
        src_root = Path(tmp) / "src"
        gen_root = Path(tmp) / "gen"
        package_src = src_root / INCLUDE_PREFIX
        package_src.mkdir(parents=True)
        gen_root.mkdir()
        for name in PROTO_FILES:
            shutil.copyfile(proto_dir / name, package_src / name)
        # Relative names with cwd at the include root keep absolute temp paths out of the output.
        cmd = [sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--python_out={gen_root}",
               *(f"{INCLUDE_PREFIX}/{name}" for name in PROTO_FILES)]
        result = subprocess.run(cmd, cwd=src_root, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"protoc failed (exit {result.returncode}):\n{result.stderr.strip()}")
        written = []
        for name in PROTO_FILES:
            target = out_dir / generated_name(name)
            shutil.copyfile(gen_root / INCLUDE_PREFIX / generated_name(name), target)
            written.append(target)
    return written


def check(proto_dir: Path = PROTO_DIR) -> list[str]:
    """Regenerate into a temp dir; return the names of checked-in modules that differ or are missing."""
    with tempfile.TemporaryDirectory(prefix="netjit-regen-check-") as tmp:
        fresh = generate(Path(tmp), proto_dir)
        return [path.name for path in fresh
                if not (proto_dir / path.name).exists()
                or not filecmp.cmp(path, proto_dir / path.name, shallow=False)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare a fresh build with the checked-in modules instead of writing them")
    args = parser.parse_args(argv)
    if args.check:
        stale = check()
        if stale:
            print(f"stale generated modules ({protoc_version()}): {', '.join(stale)}; "
                  f"run `python proto/regen.py`", file=sys.stderr)
            return 1
        print("generated modules are up to date")
        return 0
    for path in generate(PROTO_DIR):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
