"""GPU benchmarks of the numba-cuda backend, with PyTorch eager beside them where it is on the GPU.

    python examples/benchmarks/bench_gpu.py            # on a GPU machine (gpu_check.sh runs this)
    NUMBA_ENABLE_CUDASIM=1 python examples/benchmarks/bench_gpu.py --tiny   # tiny sizes, simulator

Rows (the issue's targets):
1. a fused elementwise chain (Scale, Relu, Tanh written in place: one kernel) over 64M float32,
   as a fraction of the device-to-device copy bandwidth (target >= 70%);
2. ResNet-50 (zoo predict net, random weights) at batch 32 vs PyTorch eager (target <= 1.5x);
3. one LeNet training step (examples/mnist.py's net) at batch 64 vs PyTorch eager (target <= 1.5x);
4. RunNet overhead of the tiny basics net on the GPU vs on the CPU (target <= 2x + launches).
Under ``--tiny`` the sizes shrink so the CUDA simulator finishes in seconds (its timings mean
nothing) and ResNet-50 is left out.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from netjit import brew, core, model_helper, workspace
from netjit.bench import small_net, time_calls
from netjit.bench_cuda import on_gpu
from netjit.proto import caffe2_pb2
from netjit.runtime import device as dev

REPO = Path(__file__).resolve().parents[2]
GPU = core.DeviceOption(caffe2_pb2.CUDA, 0)


def _median_ms(fn: Callable[[], Any], repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _torch_cuda() -> Any:
    try:
        import torch
    except Exception:  # noqa: BLE001 - absent or broken: the PyTorch column is left empty
        return None
    if not torch.cuda.is_available():
        return None
    # fp32 as netjit computes it: no TF32 in cuDNN convolutions or cuBLAS products.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch


def _plan_summary(net_name: str) -> str:
    """Launches and host steps per run of a CUDA net's plans, and its fallbacks (kernels that did
    not compile): what to read first when a row is slow."""
    compiled = workspace._ws().nets[net_name].compiled
    plans = compiled.plans()
    launches = sum(p.launches_per_run for p in plans)
    host = sum(s.kind == "host" for p in plans for s in p.steps) + len(compiled.barriers)
    fallbacks = compiled.fallbacks()
    return f"{launches} launches, {host} host steps" + (f", {len(fallbacks)} FALLBACKS" if fallbacks else "")


# ------------------------------------------------------------------------------ 1. fused chain
def fused_chain(n: int, repeat: int) -> dict[str, Any]:
    net = core.Net("chain")
    net.Scale(["x"], ["y"], scale=0.5)
    net.Relu(["y"], ["y"])
    net.Tanh(["y"], ["y"])
    net.RunAllOnGPU()
    workspace.FeedBlob("x", np.random.default_rng(0).standard_normal(n, dtype=np.float32), GPU)
    workspace.CreateNet(net, overwrite=True)
    workspace.RunNet("chain")
    runner = workspace._ws().nets["chain"]
    times: list[float] = []
    runner.profile = lambda step, ms: times.append(ms)
    for _ in range(repeat):
        workspace.RunNet("chain")
    runner.profile = None
    kernel_ms = statistics.median(times)
    launches = runner.compiled.plans()[0].launches_per_run
    cuda = dev.cuda()
    src, dst = workspace._ws().get("x"), cuda.device_array(n, np.float32)
    copy_times = []
    for _ in range(repeat + 1):
        a, b = cuda.event(), cuda.event()
        a.record()
        dst.copy_to_device(src)
        b.record()
        b.synchronize()
        copy_times.append(a.elapsed_time(b))
    copy_ms = statistics.median(copy_times[1:])
    gbs = lambda ms: 2 * n * 4 / (ms * 1e-3) / 1e9 if ms > 0 else float("nan")  # noqa: E731
    return {"n": n, "launches": launches, "kernel_ms": kernel_ms, "copy_ms": copy_ms,
            "kernel_gbs": gbs(kernel_ms), "copy_gbs": gbs(copy_ms),
            "fraction": copy_ms / kernel_ms if kernel_ms > 0 else float("nan")}


# ------------------------------------------------------------------------------ GEMM vs cuBLAS
def gemm_vs_cublas(n: int, repeat: int) -> dict[str, Any]:
    """The tiled numba GEMM against cuBLAS (cupy) on an n x n x n product: the measurement behind
    ``NETJIT_CUDA_CUBLAS=1`` (FC/MatMul GEMMs through cuBLAS)."""
    from netjit.compiler.codegen.cuda_gemm import Gemm
    cuda = dev.cuda()
    rng = np.random.default_rng(3)
    a, b = (cuda.to_device(rng.standard_normal((n, n), dtype=np.float32)) for _ in range(2))
    c = cuda.device_array((n, n), np.float32)
    g = Gemm(n, n, n, (n, 1, 0), (n, 1, 0), tiled=True)
    g.cublas = False

    def timed(fn: Callable[[], Any]) -> float:
        fn()
        out = []
        for _ in range(repeat):
            s, e = cuda.event(), cuda.event()
            s.record()
            fn()
            e.record()
            e.synchronize()
            out.append(s.elapsed_time(e))
        return statistics.median(out)
    res: dict[str, Any] = {"n": n, "numba_ms": timed(lambda: g(a, b, c))}
    try:
        import cupy as cp
        ca, cb = cp.asarray(a), cp.asarray(b)
        res["cublas_ms"] = timed(lambda: cp.matmul(ca, cb))
    except Exception:  # noqa: BLE001 - no cupy: no cuBLAS column
        pass
    return res


# ------------------------------------------------------------------------------ 2. ResNet-50
def _resnet50_net() -> tuple[caffe2_pb2.NetDef, str, tuple[int, ...], str]:
    """(predict net placed on the GPU, input blob, input shape, where it came from): the zoo's
    predict net with random weights where the zoo is here, else Caffe2's ResNet-50 builder
    (caffe2.python.models.resnet, is_test) with its init net's weights; both on the device."""
    from netjit import zoo
    if "resnet50" in zoo.zoo_models():
        net, data, shape = zoo.load_zoo_net("resnet50")
        for name, value in zoo.random_zoo_weights("resnet50").items():
            workspace.FeedBlob(name, value, GPU)
        return on_gpu(net), data, tuple(shape), "the zoo"
    from netjit.models import resnet
    model = model_helper.ModelHelper(name="resnet50_bench", arg_scope={"order": "NCHW"}, init_params=True)
    with core.DeviceScope(GPU):
        resnet.create_resnet50(model, "data", num_input_channels=3, num_labels=1000, is_test=True)
    workspace.RunNetOnce(model.param_init_net)
    return model.net.Proto(), "data", (1, 3, 224, 224), f"the brew builder (no zoo under {zoo.zoo_dir()})"


@contextlib.contextmanager
def cublas_gemms() -> Iterator[None]:
    """Nets created inside take their plain GEMMs (FC, the forward Conv) through cuBLAS."""
    from netjit.compiler.codegen import cuda_runner
    old = os.environ.get("NETJIT_CUDA_CUBLAS")
    os.environ["NETJIT_CUDA_CUBLAS"] = "1"
    cuda_runner._CACHE.clear()          # CUDA nets are cached by content: plan them afresh
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("NETJIT_CUDA_CUBLAS", None)
        else:
            os.environ["NETJIT_CUDA_CUBLAS"] = old
        cuda_runner._CACHE.clear()


def cupy_here() -> bool:
    try:
        import cupy  # noqa: F401
        return not dev.simulator_enabled()
    except Exception:  # noqa: BLE001 - no cupy: no cuBLAS rows
        return False


def resnet50(batch: int, repeat: int, torch_too: bool = True) -> dict[str, Any]:
    net, data, shape, source = _resnet50_net()
    x = np.random.default_rng(1).standard_normal((batch,) + tuple(shape[1:])).astype(np.float32)
    workspace.FeedBlob(data, x, GPU)
    workspace.CreateNet(net, overwrite=True)

    def step() -> None:
        workspace.RunNet(net.name)
        dev.synchronize()
    out: dict[str, Any] = {"netjit_ms": _median_ms(step, repeat), "source": source, "plan": _plan_summary(net.name)}
    torch = _torch_cuda() if torch_too else None
    try:
        import torchvision
    except Exception:  # noqa: BLE001 - no torchvision: no PyTorch ResNet-50
        torchvision = None
    if not torch_too:
        return out
    if torch is None or torchvision is None:
        out["torch_note"] = "no torch/torchvision on the GPU"
        return out
    model = torchvision.models.resnet50().cuda().eval()
    xt = torch.from_numpy(x).cuda()

    def tstep() -> None:
        with torch.no_grad():
            model(xt)
        torch.cuda.synchronize()
    out["torch_ms"] = _median_ms(tstep, repeat)
    return out


# ------------------------------------------------------------------------------ 3. LeNet step
def _mnist() -> Any:
    spec = importlib.util.spec_from_file_location("netjit_examples_mnist_bench", REPO / "examples" / "mnist.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def lenet_step(batch: int, repeat: int, tiny: bool, torch_too: bool = True) -> dict[str, Any]:
    mnist = _mnist()
    size = 10 if tiny else 28
    model = model_helper.ModelHelper(name="lenet_bench", arg_scope=mnist.ARG_SCOPE)
    with core.DeviceScope(GPU):
        if tiny:   # the same layers at a size the simulator runs quickly
            c1 = brew.conv(model, "data", "conv1", dim_in=1, dim_out=4, kernel=3)
            p1 = brew.max_pool(model, c1, "pool1", kernel=2, stride=2)
            c2 = brew.conv(model, p1, "conv2", dim_in=4, dim_out=6, kernel=3)
            p2 = brew.max_pool(model, c2, "pool2", kernel=2, stride=2)
            f3 = brew.relu(model, brew.fc(model, p2, "fc3", dim_in=6, dim_out=16), "fc3")
            softmax = brew.softmax(model, brew.fc(model, f3, "pred", 16, 10), "softmax")
        else:
            softmax = mnist.AddLeNetModel(model, "data")
        mnist.AddTrainingOperators(model, softmax, "label", checkpoint_every=10 ** 9)
    workspace.RunNetOnce(model.param_init_net)
    rng = np.random.default_rng(2)
    workspace.FeedBlob("data", rng.random((batch, 1, size, size), dtype=np.float32), GPU)
    workspace.FeedBlob("label", rng.integers(0, 10, batch).astype(np.int32), GPU)
    workspace.CreateNet(model.net, overwrite=True)

    def step() -> None:
        workspace.RunNet(model.net.Name())
        dev.synchronize()
    out: dict[str, Any] = {"netjit_ms": _median_ms(step, repeat, warmup=1), "plan": _plan_summary(model.net.Name())}
    torch = _torch_cuda() if torch_too else None
    if torch is not None and not tiny:
        nn = torch.nn
        net = nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
                            nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10)).cuda()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        xt = torch.rand(batch, 1, 28, 28, device="cuda")
        yt = torch.randint(0, 10, (batch,), device="cuda")

        def tstep() -> None:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt), yt).backward()
            opt.step()
            torch.cuda.synchronize()
        out["torch_ms"] = _median_ms(tstep, repeat)
    return out


# ------------------------------------------------------------------------------ 4. overhead
def overhead(batch_seconds: float) -> dict[str, Any]:
    net = small_net()
    workspace.CreateNet(net, overwrite=True)
    cpu = time_calls("cpu", lambda: workspace.RunNet(net.name), 5, 5, batch_seconds)
    gnet = on_gpu(net)
    workspace.CreateNet(gnet, overwrite=True)

    def run() -> None:
        workspace.RunNet(gnet.name)
        dev.synchronize()
    gpu = time_calls("gpu", run, 5, 5, batch_seconds)
    launches = workspace._ws().nets[gnet.name].compiled.plans()[0].launches_per_run
    return {"cpu_us": cpu.median_us, "gpu_us": gpu.median_us, "launches": launches}


def _device_name() -> str:
    if dev.simulator_enabled():
        return "CUDA simulator (timings meaningless)"
    name = dev.cuda().get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def _versions() -> str:
    from importlib import metadata
    out = []
    for dist in ("numba", "numba-cuda", "numpy", "cupy-cuda13x", "cupy-cuda12x", "torch", "torchvision"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(out)


class Table:
    """Rows printed as soon as each is measured (a stage killed by its timeout keeps what it printed);
    a row that fails prints its error instead of ending the run."""
    def __init__(self, budget_s: float):
        self.deadline = time.perf_counter() + budget_s
        self.failed = 0
        print(f"{'benchmark':44s} {'netjit':>24s} {'reference':>24s}  ratio / target", flush=True)

    def row(self, name: str, a: str, b: str = "", r: str = "") -> None:
        print(f"{name:44s} {a:>24s} {b:>24s}  {r}", flush=True)

    def measure(self, name: str, fn: Callable[[], tuple[str, str, str] | None]) -> None:
        if time.perf_counter() > self.deadline:
            self.row(name, "skipped: time budget spent")
            return
        try:
            cells = fn()
        except Exception as err:  # noqa: BLE001 - one row's failure is reported, the others still run
            self.failed += 1
            self.row(name, "FAILED", "", f"{type(err).__name__}: {str(err).strip().splitlines()[0][:160]}"
                     if str(err).strip() else type(err).__name__)
            import traceback
            traceback.print_exc(file=sys.stdout)
            return
        if cells is not None:
            self.row(name, *cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CUDA simulator, CI)")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--budget", type=float, default=170.0,
                        help="seconds: rows not started by then are skipped (gpu_check.sh's stage limit)")
    args = parser.parse_args(argv)
    if dev.num_cuda_devices() == 0:
        print(f"no GPU ({dev.unavailable_reason() or 'none found'}) and NUMBA_ENABLE_CUDASIM is unset: "
              "nothing to measure", file=sys.stderr)
        return 2
    repeat = args.repeat or (2 if args.tiny else 10)
    print(f"bench_gpu on {_device_name()}; {_versions()}", flush=True)
    torch = _torch_cuda()
    print("PyTorch column: " + ("torch " + torch.__version__ + " on the GPU (TF32 off: fp32 as netjit)"
                                if torch is not None else "left empty (torch absent or without CUDA)"), flush=True)
    table = Table(args.budget)

    def chain() -> tuple[str, str, str]:
        c = fused_chain(4096 if args.tiny else 64 * 2 ** 20, repeat)
        return (f"{c['kernel_ms']:.3f} ms {c['kernel_gbs']:.0f} GB/s", f"d2d copy {c['copy_gbs']:.0f} GB/s",
                f"{100 * c['fraction']:.0f}% of copy (>= 70%); {c['launches']} launch(es)")
    table.measure(f"fused chain {4096 if args.tiny else 64 * 2 ** 20} f32", chain)

    def runnet() -> tuple[str, str, str]:
        o = overhead(0.02 if args.tiny else 0.2)
        return (f"{o['gpu_us']:.1f} us", f"CPU {o['cpu_us']:.1f} us",
                f"{o['gpu_us'] / o['cpu_us']:.2f}x CPU (<= 2x + launches); {o['launches']} launch(es)")
    table.measure("tiny net RunNet", runnet)
    lb = 2 if args.tiny else 64

    def lenet() -> tuple[str, str, str]:
        s = lenet_step(lb, repeat, args.tiny)
        t = s.get("torch_ms")
        return (f"{s['netjit_ms']:.2f} ms", f"torch {t:.2f} ms" if t else "n/a",
                (f"{s['netjit_ms'] / t:.2f}x (<= 1.5x); " if t else "") + s["plan"])
    table.measure(f"LeNet train step b{lb}{' (small)' if args.tiny else ''}", lenet)
    if not args.tiny and cupy_here():
        def lenet_cublas() -> tuple[str, str, str]:
            with cublas_gemms():
                s = lenet_step(lb, repeat, args.tiny, torch_too=False)
            return f"{s['netjit_ms']:.2f} ms", "", s["plan"]
        table.measure(f"LeNet train step b{lb}, NETJIT_CUDA_CUBLAS=1", lenet_cublas)

    if not args.tiny:
        def gemm() -> tuple[str, str, str]:
            gm = gemm_vs_cublas(2048, repeat)
            t = gm.get("cublas_ms")
            verdict = ("NETJIT_CUDA_CUBLAS=1 is faster" if t < gm["numba_ms"] else "numba is faster") if t else ""
            return f"{gm['numba_ms']:.2f} ms", f"cuBLAS {t:.2f} ms" if t else "no cupy", verdict
        table.measure("GEMM 2048^3 numba tiled vs cuBLAS", gemm)

        def resnet() -> tuple[str, str, str]:
            r = resnet50(32, repeat)
            t = r.get("torch_ms")
            ratio = f"{r['netjit_ms'] / t:.2f}x (<= 1.5x); " if t else ""
            return (f"{r['netjit_ms']:.2f} ms", f"torch {t:.2f} ms" if t else r.get("torch_note", "n/a"),
                    f"{ratio}{r['plan']}; net from {r['source']}")
        table.measure("ResNet-50 b32 predict", resnet)
        if cupy_here():
            def resnet_cublas() -> tuple[str, str, str]:
                with cublas_gemms():
                    r = resnet50(32, repeat, torch_too=False)
                return f"{r['netjit_ms']:.2f} ms", "", r["plan"]
            table.measure("ResNet-50 b32, NETJIT_CUDA_CUBLAS=1", resnet_cublas)
    else:
        table.row("ResNet-50 b32", "skipped (--tiny)")

    print(f"bench_gpu: {table.failed} row(s) failed", flush=True)
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
