"""LeNet (the MNIST tutorial's, examples/mnist.py) and ResNet-50: netjit vs PyTorch vs onnxruntime.

Rows, all on the same weights and the same real MNIST digits, in one process:
- LeNet training step, batch 64: forward + backward + SGD update. netjit runs the tutorial's
  training net (brew LeNet, LabelCrossEntropy, AveragedLoss, AddGradientOperators, Iter,
  LearningRate, WeightedSum) through ``workspace.RunNet``; PyTorch eager runs the same layers with
  ``cross_entropy`` and ``optim.SGD``.
- LeNet predict latency, batch 1 and 64: ``workspace.Predictor`` over the mobile_exporter pair
  (compiled and reference executors), PyTorch eager under ``inference_mode``, onnxruntime on an
  ONNX graph built from the same Caffe2 predict net (c2_to_onnx.py).
- ResNet-50 predict latency, batch 1 (model-zoo net, ``zoo.random_zoo_weights``): netjit
  compiled and reference, onnxruntime.

Engines are timed in interleaved rounds (each round times a batch of calls of every engine in
turn), so that load from other processes on this shared VM hits them alike; the table gives the
median per-call time over rounds, the min-max spread, and the ratio to PyTorch / onnxruntime.
Each netjit row is first checked against PyTorch / onnxruntime numerically.

    python examples/benchmarks/bench_lenet.py                  # everything (~2-4 min)
    python examples/benchmarks/bench_lenet.py --skip-resnet --rounds 9 --profile
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator



def _threads_from_argv(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return None


# --threads must reach OpenBLAS (numpy), OpenMP (torch) and numba before numpy or torch loads them:
# they read these variables once, when their library loads. onnxruntime takes it in its session options.
THREADS = _threads_from_argv(sys.argv[1:])
if THREADS is not None:
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[_var] = THREADS

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # examples/: the tutorial's model functions live in mnist.py
sys.path.insert(0, str(HERE))

from caffe2.python import brew, core, model_helper, workspace  # noqa: E402
from caffe2.python.predictor import mobile_exporter  # noqa: E402

import mnist  # noqa: E402
from netjit.mnist_data import DEFAULT_MNIST_DIR, IMAGES_FILE, LABELS_FILE, read_idx  # noqa: E402

LENET_PARAMS = ["conv1_w", "conv1_b", "conv2_w", "conv2_b", "fc3_w", "fc3_b", "pred_w", "pred_b"]
LR = 0.1


@contextmanager
def executor(name: str) -> Iterator[None]:
    """Nets created inside the block use this netjit executor."""
    old = os.environ.get("NETJIT_EXECUTOR")
    os.environ["NETJIT_EXECUTOR"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("NETJIT_EXECUTOR", None)
        else:
            os.environ["NETJIT_EXECUTOR"] = old


# ------------------------------------------------------------------------------ timing
def interleaved(engines: dict[str, Callable[[], Any]], rounds: int, batch_s: float,
                warmup: int = 3) -> dict[str, list[float]]:
    """Per-call seconds of each engine in each round; engines take turns within a round."""
    calls: dict[str, int] = {}
    for name, fn in engines.items():
        for _ in range(warmup):
            fn()
        start = time.perf_counter()
        fn()
        calls[name] = max(1, int(batch_s / max(time.perf_counter() - start, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in engines}
    order = list(engines)
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            fn, n = engines[name], calls[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n)
    return samples


def table(title: str, samples: dict[str, list[float]], baselines: list[str]) -> str:
    med = {k: statistics.median(v) for k, v in samples.items()}
    present = [b for b in baselines if b in med]
    head = f"{'engine':28s} {'median ms':>10s} {'min-max ms':>17s}" + "".join(f" {'x ' + b:>14s}" for b in present)
    lines = [title, head, "-" * len(head)]
    for name, values in samples.items():
        ratios = "".join(f" {med[name] / med[b]:14.2f}" for b in present)
        lines.append(f"{name:28s} {1e3 * med[name]:10.3f} {1e3 * min(values):8.3f}-{1e3 * max(values):<8.3f}"
                     + ratios)
    return "\n".join(lines)


# ------------------------------------------------------------------------------ LeNet nets
def lenet_train_model() -> model_helper.ModelHelper:
    """The tutorial's training net fed by blobs (data float [64,1,28,28] in [0,1), label int32),
    with a fixed learning rate so one step is comparable with PyTorch's SGD."""
    model = model_helper.ModelHelper(name="bench_lenet_train", arg_scope=mnist.ARG_SCOPE)
    data = model.StopGradient("data", "data")
    softmax = mnist.AddLeNetModel(model, data)
    xent = model.LabelCrossEntropy([softmax, "label"], "xent")
    loss = model.AveragedLoss(xent, "loss")
    model.AddGradientOperators([loss])
    iteration = brew.iter(model, "iter")
    lr = model.LearningRate(iteration, "LR", base_lr=-LR, policy="fixed")
    one = model.param_init_net.ConstantFill([], "ONE", shape=[1], value=1.0)
    for param in model.params:
        model.WeightedSum([param, one, model.param_to_grad[param], lr], param)
    mnist.seed_initializers(model.param_init_net, 0)
    return model


def lenet_deploy_net() -> core.Net:
    model = model_helper.ModelHelper(name="bench_lenet_deploy", arg_scope=mnist.ARG_SCOPE, init_params=False)
    mnist.AddLeNetModel(model, "data")
    return model.net


def torch_lenet(weights: dict[str, np.ndarray]) -> Any:
    import torch
    from torch import nn

    class LeNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
            self.fc3, self.pred = nn.Linear(800, 500), nn.Linear(500, 10)

        def forward(self, x: Any) -> Any:   # logits; softmax is applied by the loss / caller
            x = nn.functional.max_pool2d(self.conv1(x), 2)
            x = nn.functional.max_pool2d(self.conv2(x), 2)
            return self.pred(torch.relu(self.fc3(x.flatten(1))))

    net = LeNet()
    with torch.no_grad():
        for layer in ("conv1", "conv2", "fc3", "pred"):
            getattr(net, layer).weight.copy_(torch.from_numpy(weights[layer + "_w"]))
            getattr(net, layer).bias.copy_(torch.from_numpy(weights[layer + "_b"]))
    return net


def torch_param(net: Any, name: str) -> np.ndarray:
    """The PyTorch tensor behind a Caffe2 parameter name (conv1_w -> conv1.weight)."""
    layer = getattr(net, name.rsplit("_", 1)[0])
    return (layer.weight if name.endswith("_w") else layer.bias).detach().numpy()


def ort_session(model: Any) -> Any:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if THREADS is not None:
        options.intra_op_num_threads = int(THREADS)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------ benchmarks
def bench_lenet_train(images: np.ndarray, labels: np.ndarray, rounds: int, batch_s: float,
                      want_torch: bool) -> tuple[dict[str, list[float]], list[str]]:
    notes: list[str] = []
    model = lenet_train_model()
    feeds = {"data": images[:64], "label": labels[:64].astype(np.int32)}
    engines: dict[str, Callable[[], Any]] = {}
    start_weights: dict[str, np.ndarray] = {}
    for name in ("compiled", "reference"):
        workspace.SwitchWorkspace(f"bench_train_{name}", True)
        workspace.ResetWorkspace()
        with executor(name):
            workspace.RunNetOnce(model.param_init_net)
            for blob, value in feeds.items():
                workspace.FeedBlob(blob, value)
            start_weights = {p: workspace.FetchBlob(p) for p in LENET_PARAMS}
            workspace.CreateNet(model.net, overwrite=True)
            started = time.perf_counter()
            workspace.RunNet(model.net)
            first = time.perf_counter() - started
        stepped = {p: workspace.FetchBlob(p) for p in LENET_PARAMS}
        loss = float(workspace.FetchBlob("loss"))
        notes.append(f"netjit {name}: first step {first:.2f} s (compile/plan included), loss {loss:.5f}")
        ws_name = f"bench_train_{name}"

        def step(ws_name: str = ws_name) -> None:
            workspace.SwitchWorkspace(ws_name)
            workspace.RunNet(model.net.Proto().name)
        engines[f"netjit {name}"] = step
        if name == "compiled":
            compiled_step = stepped
    if want_torch:
        import torch
        net = torch_lenet(start_weights)
        opt = torch.optim.SGD(net.parameters(), lr=LR)
        x, y = torch.from_numpy(feeds["data"]), torch.from_numpy(labels[:64].astype(np.int64))

        def torch_step() -> None:
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
        with torch.no_grad():
            loss = float(torch.nn.functional.cross_entropy(net(x), y))
        torch_step()
        diff = {p: float(np.abs(torch_param(net, p) - compiled_step[p]).max()) for p in LENET_PARAMS}
        dense = max(v for p, v in diff.items() if p.startswith(("fc3", "pred", "conv2_w")))
        conv = max(v for p, v in diff.items() if p.startswith(("conv1", "conv2_b")))
        notes.append(f"torch eager: loss {loss:.5f}; after one SGD step from the same weights, max |param diff| "
                     f"vs netjit compiled: fc3/pred/conv2_w {dense:.1e}, conv1/conv2_b {conv:.1e} (Caffe2's "
                     f"MaxPoolGradient feeds every tied maximum, PyTorch one; blank MNIST areas tie)")
        engines["torch eager"] = torch_step
    samples = interleaved(engines, rounds, batch_s)
    workspace.SwitchWorkspace("default")
    return samples, notes


def bench_lenet_predict(images: np.ndarray, batch: int, rounds: int, batch_s: float, want_torch: bool,
                        want_ort: bool) -> tuple[dict[str, list[float]], list[str]]:
    notes: list[str] = []
    train = lenet_train_model()
    workspace.SwitchWorkspace("bench_predict_params", True)
    workspace.ResetWorkspace()
    with executor("reference"):
        workspace.RunNetOnce(train.param_init_net)
    weights = {p: workspace.FetchBlob(p) for p in LENET_PARAMS}
    deploy = lenet_deploy_net()
    init_net, predict_net = mobile_exporter.Export(workspace, deploy, LENET_PARAMS)
    x = np.ascontiguousarray(images[:batch])
    engines: dict[str, Callable[[], Any]] = {}
    outputs: dict[str, np.ndarray] = {}
    for name in ("compiled", "reference"):
        with executor(name):
            predictor = workspace.Predictor(init_net, predict_net)
        outputs[name] = predictor.run([x])[0]
        engines[f"netjit {name} Predictor"] = lambda p=predictor: p.run([x])
    notes.append(f"compiled vs reference max |softmax diff| {np.abs(outputs['compiled'] - outputs['reference']).max():.2e}")
    if want_torch:
        import torch
        net = torch_lenet(weights).eval()
        tx = torch.from_numpy(x)

        def torch_predict() -> Any:
            with torch.inference_mode():
                return torch.softmax(net(tx), 1)
        notes.append(f"torch vs netjit compiled max |softmax diff| "
                     f"{np.abs(torch_predict().numpy() - outputs['compiled']).max():.2e}")
        engines["torch eager"] = torch_predict
    if want_ort:
        from c2_to_onnx import netdef_to_onnx
        workspace.FeedBlob("data", x)
        with executor("reference"):
            workspace.RunNetOnce(deploy)
        shapes = {b: workspace.FetchBlob(b).shape for b in workspace.Blobs()}
        session = ort_session(netdef_to_onnx(deploy.Proto(), weights, {"data": ("N", 1, 28, 28)}, ["softmax"],
                                             shapes))
        feed = {"data": x}
        notes.append(f"onnxruntime vs netjit compiled max |softmax diff| "
                     f"{np.abs(session.run(None, feed)[0] - outputs['compiled']).max():.2e}")
        engines["onnxruntime"] = lambda: session.run(None, feed)
    samples = interleaved(engines, rounds, batch_s)
    workspace.SwitchWorkspace("default")
    return samples, notes


def bench_resnet50(rounds: int, batch_s: float, want_ort: bool) -> tuple[dict[str, list[float]], list[str]]:
    from netjit import zoo
    net, data, shape = zoo.load_zoo_net("resnet50")
    weights = zoo.random_zoo_weights("resnet50")
    x = zoo.random_zoo_input("resnet50")
    out = net.external_output[0]
    notes: list[str] = []
    engines: dict[str, Callable[[], Any]] = {}
    results: dict[str, np.ndarray] = {}
    for name in ("compiled", "reference"):
        workspace.SwitchWorkspace(f"bench_resnet_{name}", True)
        workspace.ResetWorkspace()
        for blob, value in weights.items():
            workspace.FeedBlob(blob, value)
        workspace.FeedBlob(data, x)
        with executor(name):
            workspace.CreateNet(net, overwrite=True)
        started = time.perf_counter()
        workspace.RunNet(net.name)
        notes.append(f"netjit {name}: first run {time.perf_counter() - started:.2f} s (compile/plan included)")
        results[name] = workspace.FetchBlob(out)
        if name == "reference":
            shapes = {b: workspace.FetchBlob(b).shape for b in workspace.Blobs()}

        def run(ws_name: str = f"bench_resnet_{name}") -> None:
            workspace.SwitchWorkspace(ws_name)
            workspace.RunNet(net.name)
        engines[f"netjit {name}"] = run
    notes.append(f"compiled vs reference max |softmax diff| {np.abs(results['compiled'] - results['reference']).max():.2e}")
    if want_ort:
        from c2_to_onnx import netdef_to_onnx
        session = ort_session(netdef_to_onnx(net, weights, {data: shape}, [out], shapes))
        feed = {data: x}
        notes.append(f"onnxruntime vs netjit reference max |softmax diff| "
                     f"{np.abs(session.run(None, feed)[0] - results['reference']).max():.2e}")
        engines["onnxruntime"] = lambda: session.run(None, feed)
    samples = interleaved(engines, rounds, batch_s, warmup=2)
    workspace.SwitchWorkspace("default")
    return samples, notes


# ------------------------------------------------------------------------------ profile
def profile_train(images: np.ndarray, labels: np.ndarray, steps: int = 20) -> str:
    """Where a compiled training step spends its time: cProfile's top functions, and each op's
    numpy reference time (netjit bench --per-op)."""
    import cProfile
    import io
    import pstats

    from netjit.bench import compiled_steps, format_table, per_op
    model = lenet_train_model()
    workspace.SwitchWorkspace("bench_profile", True)
    workspace.ResetWorkspace()
    with executor("compiled"):
        workspace.RunNetOnce(model.param_init_net)
        workspace.FeedBlob("data", images[:64])
        workspace.FeedBlob("label", labels[:64].astype(np.int32))
        workspace.CreateNet(model.net, overwrite=True)
        workspace.RunNet(model.net)
    prof = cProfile.Profile()
    prof.enable()
    workspace.RunNet(model.net, steps)
    prof.disable()
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text).sort_stats("tottime")
    text.write(f"cProfile of {steps} compiled training steps (tottime per step = tottime / {steps}):\n")
    stats.print_stats(15)
    init = model.param_init_net.Proto()
    feeds = {"data": images[:64], "label": labels[:64].astype(np.int32)}
    ops = per_op(model.net.Proto(), init, feeds)
    workspace.SwitchWorkspace("default")
    return "\n".join([text.getvalue(), format_table(ops, "per op (numpy reference)"), "",
                      "\n".join(compiled_steps(model.net.Proto()))])


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (default 7)")
    parser.add_argument("--batch-seconds", type=float, default=0.25, help="time per engine per round")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--profile", action="store_true", help="profile a compiled LeNet training step")
    parser.add_argument("--mnist-dir", type=Path, default=DEFAULT_MNIST_DIR)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every engine (OpenBLAS/numba/torch/onnxruntime); default: theirs")
    args = parser.parse_args(argv)

    try:
        import torch
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        want_torch = True
        torch_info = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        want_torch, torch_info = False, "torch not installed: no torch column"
    try:
        import onnx  # noqa: F401
        import onnxruntime
        want_ort, ort_info = True, f"onnxruntime {onnxruntime.__version__}"
    except ImportError:
        want_ort, ort_info = False, "onnxruntime/onnx not installed: no onnxruntime column"
    import numba
    print(f"machine: {machine()}")
    print(f"numpy {np.__version__}, numba {numba.__version__}, {torch_info}, {ort_info}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, threads per engine: "
          f"{args.threads or 'default'}; load average before: {os.getloadavg()[0]:.2f}")

    images = read_idx(args.mnist_dir / IMAGES_FILE)[:64, None].astype(np.float32) / 256
    labels = read_idx(args.mnist_dir / LABELS_FILE)[:64].astype(np.int64)
    baselines = [b for b, ok in (("torch eager", want_torch), ("onnxruntime", want_ort)) if ok]

    samples, notes = bench_lenet_train(images, labels, args.rounds, args.batch_seconds, want_torch)
    print("\n" + table("LeNet training step, batch 64 (forward + backward + SGD update)", samples, baselines))
    print("\n".join("  " + n for n in notes))
    for batch in (1, 64):
        samples, notes = bench_lenet_predict(images, batch, args.rounds, args.batch_seconds, want_torch, want_ort)
        print("\n" + table(f"LeNet predict, batch {batch}", samples, baselines))
        print("\n".join("  " + n for n in notes))
    if not args.skip_resnet:
        samples, notes = bench_resnet50(max(3, args.rounds // 2), args.batch_seconds * 2, want_ort)
        print("\n" + table("ResNet-50 predict, batch 1 (model-zoo net, random weights)", samples, baselines))
        print("\n".join("  " + n for n in notes))
    if args.profile:
        print("\n" + profile_train(images, labels))
    print(f"\nload average after: {os.getloadavg()[0]:.2f} (other processes on this VM skew the numbers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
