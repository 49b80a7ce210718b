"""The compile table: how long a new process takes to its first output, per net and cache state.

Each figure is one fresh process, timed from its first line: ``import netjit``, then building the
net's predictor or workspace (weights fed beforehand, not timed), compiling, and the first run.
States (every cache a fresh temporary folder unless it is the one being kept):

- ``install``: nothing cached at all (``NUMBA_CACHE_DIR``, ``NETJIT_CACHE_DIR`` and the prebuilt
  store empty): what a new user's first run costs without ``netjit warmup``;
- ``warmup``: ``netjit warmup`` run once in that empty state (its own time is reported);
- ``cold lib``: numba's cache of the library kernels filled by that warmup, but neither the user
  cache nor the prebuilt store of generated kernels: a net compiles every fused group itself;
- ``cold``: after ``netjit warmup``, ``NETJIT_CACHE_DIR`` empty (the state a user is in after
  install when the setup runs the warmup: a new net compiles only the groups the warmup lacked);
- ``warm``: the same net again in a new process (everything cached); shown beyond ``import netjit``.

    python examples/benchmarks/bench_compile.py                     # every net, 1 cold / 3 warm runs
    python examples/benchmarks/bench_compile.py --nets lenet_predict --install --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = REPO.parent / "shared"

# Targets of issue 12 (seconds): cold net, and warm beyond import.
NETS = ("lenet_predict", "lenet_train", "squeezenet", "resnet50", "densenet121")
COLD_TARGET = {"lenet_predict": 3.0, "lenet_train": 4.0, "squeezenet": 5.0, "resnet50": 10.0, "densenet121": 15.0}
INSTALL_TARGET = 5.0
WARM_TARGET = 0.3


# ------------------------------------------------------------------------------ child side
def _squeezenet(b_mod):
    """SqueezeNet 1.1 at 224x224 (fire modules; bias + ReLU convs; Concat), random weights."""
    b = b_mod._Builder("squeezenet11", (1, 3, 224, 224))
    x = b.op("Relu", [b.conv("data", "conv1", 64, 3, stride=2)], "relu1")
    x = b.op("MaxPool", [x], "pool1", kernel=3, stride=2)
    fires = [(16, 64), (16, 64), "pool", (32, 128), (32, 128), "pool", (48, 192), (48, 192), (64, 256), (64, 256)]
    for i, fire in enumerate(fires):
        if fire == "pool":
            x = b.op("MaxPool", [x], f"pool{i}", kernel=3, stride=2)
            continue
        s, e = fire
        sq = b.op("Relu", [b.conv(x, f"fire{i}/squeeze", s, 1)], f"fire{i}/squeeze_relu")
        e1 = b.op("Relu", [b.conv(sq, f"fire{i}/e1", e, 1)], f"fire{i}/e1_relu")
        e3 = b.op("Relu", [b.conv(sq, f"fire{i}/e3", e, 3, pad=1)], f"fire{i}/e3_relu")
        x = b.op("Concat", [e1, e3], f"fire{i}/concat", 2 * e)
        b.net.op[-1].output.append(f"fire{i}/dims")
    x = b.op("Dropout", [x], "drop", is_test=1, ratio=0.5)
    x = b.op("Relu", [b.conv(x, "conv10", 1000, 1)], "relu10")
    x = b.op("AveragePool", [x], "pool10", global_pooling=1)
    b.op("Softmax", [x], "prob")
    b.net.external_output.append("prob")
    return b


def child(case: str) -> dict:
    start = time.perf_counter()
    import numpy as np

    import netjit  # noqa: F401
    from netjit import workspace
    from netjit.compiler.codegen.modules import kernel_stats
    imported = time.perf_counter()
    if case == "lenet_predict":
        from netjit.proto.io import load_net
        model = SHARED / "models" / "lenet_pytorch_export"
        init, predict = load_net(model / "init_net.pb"), load_net(model / "predict_net.pb")
        x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
        t0 = time.perf_counter()
        workspace.Predictor(init, predict).run([x])
    elif case == "lenet_train":
        sys.path[:0] = [str(HERE.parent), str(HERE)]
        import bench_engines
        model = bench_engines.lenet_train_model()
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        workspace.RunNetOnce(model.param_init_net)
        workspace.FeedBlob("data", rng.random((64, 1, 28, 28), dtype=np.float32))
        workspace.FeedBlob("label", rng.integers(0, 10, 64).astype(np.int32))
        workspace.CreateNet(model.net)
        workspace.RunNet(model.net)
    else:
        from netjit.proto import caffe2_pb2
        if case == "squeezenet":
            from netjit.compiler.codegen import warmup_nets
            b = _squeezenet(warmup_nets)
            net, weights, x = b.net, {k: v for k, v in b.feeds.items() if k != "data"}, {"data": b.feeds["data"]}
        else:
            from netjit import zoo
            net, data, _ = zoo.load_zoo_net(case)
            weights, x = zoo.random_zoo_weights(case), {data: zoo.random_zoo_input(case)}
        for name, value in weights.items():
            workspace.FeedBlob(name, value)
        t0 = time.perf_counter()
        workspace.Predictor(caffe2_pb2.NetDef(name="init"), net).run(x)
    done = time.perf_counter()
    # Setup before t0 (reading files, making random weights) is not compile work: left out.
    return {"import": imported - start, "first": done - t0, "total": (imported - start) + (done - t0),
            **kernel_stats()}


# ------------------------------------------------------------------------------ parent side
def run_child(case: str, env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", case], env={**os.environ, **env}, cwd=REPO,
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summary(values: list[float]) -> str:
    return f"{min(values):6.2f} / {statistics.median(values):6.2f}" if values else "    -"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--nets", nargs="*", choices=NETS, default=list(NETS))
    parser.add_argument("--install", action="store_true", help="also time LeNet predict with nothing cached (slow)")
    parser.add_argument("--cold-lib", action="store_true", help="also time each net without the prebuilt store")
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per cold figure")
    parser.add_argument("--warm-repeats", type=int, default=3, help="fresh processes per warm figure")
    parser.add_argument("-j", "--workers", type=int, default=None, help="netjit warmup's workers")
    parser.add_argument("--reuse", type=Path, help="a scratch folder of an earlier run: keep its warmup")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    if "lenet_predict" in args.nets and not (SHARED / "models" / "lenet_pytorch_export").exists():
        print(f"lenet_predict needs {SHARED}/models: skipped")
        args.nets.remove("lenet_predict")

    root = args.reuse or Path(tempfile.mkdtemp(prefix="netjit-bench-compile-"))
    numba_dir, library = root / "numba", root / "library"
    fresh = iter(range(10 ** 6))

    def empty() -> str:
        return str(root / f"user{next(fresh)}")

    print(f"load average at start: {os.getloadavg()}; cpus: {os.cpu_count()}; scratch {root}")
    rows: dict[str, dict[str, list[float]]] = {net: {} for net in args.nets}
    if args.install and "lenet_predict" in args.nets:
        for i in range(args.repeats):
            env = {"NUMBA_CACHE_DIR": str(root / f"install_numba{i}"), "NETJIT_CACHE_DIR": empty(),
                   "NETJIT_LIBRARY_DIR": str(root / f"install_lib{i}")}
            rows["lenet_predict"].setdefault("install", []).append(run_child("lenet_predict", env)["total"])
            print(f"  install run {i}: {rows['lenet_predict']['install'][-1]:.2f} s", flush=True)

    start = time.perf_counter()
    reuse = args.reuse is not None and (library / "kernels").is_dir()
    warm_env = {**os.environ, "NUMBA_CACHE_DIR": str(numba_dir), "NETJIT_LIBRARY_DIR": str(library)}
    cmd = [sys.executable, "-c", "import sys; from netjit.cli import main; sys.exit(main(sys.argv[1:]))", "warmup"]
    if args.workers:
        cmd += ["-j", str(args.workers)]
    if reuse:
        warmup_s = float("nan")
        print(f"reusing the warmup in {root}")
    else:
        proc = subprocess.run(cmd, env=warm_env, cwd=REPO, capture_output=True, text=True, timeout=7200)
        if proc.returncode != 0:
            raise RuntimeError(f"netjit warmup failed:\n{proc.stderr[-3000:]}")
        warmup_s = time.perf_counter() - start
        print(proc.stdout.rstrip())
        print(f"netjit warmup (from nothing cached): {warmup_s:.1f} s", flush=True)

    for net in args.nets:
        states = (["cold lib"] if args.cold_lib else []) + ["cold"]
        for state in states:
            lib = str(root / "no_library") if state == "cold lib" else str(library)
            for i in range(args.repeats):
                user = empty()
                env = {"NUMBA_CACHE_DIR": str(numba_dir), "NETJIT_CACHE_DIR": user, "NETJIT_LIBRARY_DIR": lib}
                try:
                    got = run_child(net, env)
                except RuntimeError as err:
                    print(f"  {net} {state}: {err}", flush=True)
                    break
                rows[net].setdefault(state, []).append(got["total"])
                print(f"  {net} {state} run {i}: {got['total']:.2f} s ({got['cache_misses']} kernels compiled, "
                      f"{got['cache_hits']} loaded)", flush=True)
                if state == "cold" and i == 0:
                    for _ in range(args.warm_repeats):
                        warm = run_child(net, env)
                        rows[net].setdefault("warm", []).append(warm["first"])
                        rows[net].setdefault("import", []).append(warm["import"])
                        print(f"  {net} warm: {warm['first']:.2f} s beyond import ({warm['import']:.2f} s), "
                              f"{warm['cache_misses']} compiled", flush=True)

    print(f"\nload average at end: {os.getloadavg()}")
    print(f"seconds to the first output in a new process, min / median; netjit warmup took {warmup_s:.1f} s")
    header = f"{'net':14s} {'install':>15s} {'cold lib':>15s} {'cold':>15s} {'target':>7s} {'warm+':>15s} {'target':>6s}"
    print(header)
    for net, cols in rows.items():
        install = summary(cols.get("install", [])) + (f" (<={INSTALL_TARGET:g})" if cols.get("install") else "")
        print(f"{net:14s} {install:>15s} {summary(cols.get('cold lib', [])):>15s} {summary(cols.get('cold', [])):>15s} "
              f"{'<=' + format(COLD_TARGET[net], 'g'):>7s} {summary(cols.get('warm', [])):>15s} "
              f"{'<=' + format(WARM_TARGET, 'g'):>6s}")
    imports = [v for cols in rows.values() for v in cols.get("import", [])]
    if imports:
        print(f"import netjit: {summary(imports)} s (warm+ is beyond it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
