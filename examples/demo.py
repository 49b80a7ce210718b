"""netjit's main demo: Caffe2 code running unchanged on modern Python, compiled.

1. The Caffe2 intro tutorial's first net, built with ``caffe2.python.core`` and run with
   ``workspace.RunNet`` (compiled by default), with the RunNet vs RunNetOnce overhead.
2. The toy regression tutorial, trained on the compiled path.
3. ``netjit.compile`` on an elementwise chain: what it fused, and its speed against numpy op by op.
4. A real model file written by Caffe2 (LeNet exported from PyTorch through ONNX) predicting the real
   MNIST test digits through ``workspace.Predictor``, when ../shared sits beside the checkout.

Run: ``bash examples/demo.sh`` (sets up .venv first) or ``python examples/demo.py [OUT_DIR]``.
"""
from __future__ import annotations

import runpy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def banner(title: str) -> None:
    print(f"\n{'=' * 78}\n{title}\n{'=' * 78}", flush=True)


def per_call_us(fn, repeats: int = 2000) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e6


def first_net() -> None:
    from caffe2.python import core, workspace

    banner("1. The intro tutorial's net: GaussianFill x2 + ConstantFill + FC")
    workspace.ResetWorkspace()
    net = core.Net("my_first_net")
    X = net.GaussianFill([], ["X"], mean=0.0, std=1.0, shape=[2, 3], run_once=0)
    W = net.GaussianFill([], ["W"], mean=0.0, std=1.0, shape=[5, 3], run_once=0)
    b = net.ConstantFill([], ["b"], shape=[5], value=1.0, run_once=0)
    X.FC([W, b], ["Y"])
    print(net.Proto())
    workspace.CreateNet(net)
    workspace.RunNet(net.Name())
    print("Y =\n", workspace.FetchBlob("Y"))
    run_net = per_call_us(lambda: workspace.RunNet(net.Name()))
    run_once = per_call_us(lambda: workspace.RunNetOnce(net), repeats=500)
    print(f"RunNet: {run_net:.1f} us per call; RunNetOnce: {run_once:.1f} us per call "
          f"(Caffe2's C++ runtime: 4.4 us and 364 us on the tutorial's machine)")


def toy_regression(out_dir: Path) -> None:
    banner("2. The toy regression tutorial (examples/tutorials/toy_regression.py), compiled")
    # Run as the script it is: its folder first on sys.path, for its tutorial_utils import.
    sys.path.insert(0, str(HERE / "tutorials"))
    runpy.run_path(str(HERE / "tutorials" / "toy_regression.py"), run_name="__main__")


def compile_chain() -> None:
    import netjit
    from netjit import core

    banner("3. netjit.compile: a 6-op elementwise chain over 4M float32")
    net = core.Net("chain")
    x = net.AddExternalInput("x")
    y = x.Scale([], "a", scale=2.0).Add(["x"], "b").Relu([], "c").Sigmoid([], "d").Mul(["x"], "e").Tanh([], "f")
    net.AddExternalOutput(y)
    data = np.random.default_rng(0).standard_normal(1 << 22).astype(np.float32)
    exe = netjit.compile(net, inputs={"x": data})
    print(exe.explain(sources=False))
    got = exe(x=data)["f"]

    def numpy_chain() -> np.ndarray:
        a = data * np.float32(2.0)
        c = np.maximum(a + data, 0)
        d = 1 / (1 + np.exp(-c))
        return np.tanh(d * data)

    np.testing.assert_allclose(got, numpy_chain(), rtol=1e-5, atol=1e-6)
    compiled = per_call_us(lambda: exe(x=data), repeats=20)
    reference = per_call_us(numpy_chain, repeats=20)
    print(f"compiled: {compiled / 1e3:.2f} ms; numpy op by op: {reference / 1e3:.2f} ms "
          f"({reference / compiled:.1f}x); results agree to 1e-5")


def real_model() -> None:
    banner("4. A real Caffe2 model file: LeNet (init_net.pb + predict_net.pb) on the MNIST test set")
    shared = HERE.parent.parent / "shared"
    if not (shared / "models" / "lenet_pytorch_export").exists():
        print(f"skipped: {shared} is not beside the checkout (it holds the model files and the digits)")
        return
    from netjit.compiler.codegen import prebuild
    from netjit.compiler.codegen.modules import library_dir
    if prebuild.is_warm():
        print(f"(kernels prebuilt by `netjit warmup` in {library_dir()}: the time below is mostly running)")
    else:
        print("(no `netjit warmup` on this machine yet: the time below includes compiling the kernels)")
    module = runpy.run_path(str(HERE / "lenet_export_predict.py"))
    module["main"]([])


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="netjit-demo-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    sys.argv = [sys.argv[0], str(out_dir)]  # the tutorial scripts take their output folder from argv
    first_net()
    toy_regression(out_dir)
    compile_chain()
    real_model()
    print(f"\nDone. Files written to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
