"""RunNet vs RunNetOnce overhead (the basics tutorial's measurement) and the toy-regression train
net, reference executor vs compiled.

    python examples/benchmarks/bench_runnet.py [--repeat 7] [--quick] [NET.pb [--init INIT.pb]]

Rows are per-call times: median, min and max over the timed batches (see ``netjit bench``).
"""
from __future__ import annotations

import argparse

from caffe2.proto import caffe2_pb2
from caffe2.python import core

from netjit.bench import bench_net, format_table, small_net, time_calls
from netjit.compiler.runner import make_runner
from netjit.proto.io import load_net
from netjit.runtime.workspace import Workspace


def toy_regression_nets() -> tuple[caffe2_pb2.NetDef, caffe2_pb2.NetDef]:
    """The Toy Regression tutorial's init and train nets (examples/tutorials/toy_regression.py)."""
    init_net = core.Net("toy_init")
    init_net.Proto().device_option.CopyFrom(core.DeviceOption(caffe2_pb2.CPU, 0, random_seed=1701))
    w = init_net.UniformFill([], "W", shape=[1, 2], min=-1.0, max=1.0)
    b = init_net.ConstantFill([], "B", shape=[1], value=0.0)
    w_gt = init_net.GivenTensorFill([], "W_gt", shape=[1, 2], values=[2.0, 1.5])
    b_gt = init_net.GivenTensorFill([], "B_gt", shape=[1], values=[0.5])
    one = init_net.ConstantFill([], "ONE", shape=[1], value=1.0)
    it = init_net.ConstantFill([], "ITER", shape=[1], value=0, dtype=core.DataType.INT64)
    train = core.Net("toy_train")
    train.Proto().device_option.CopyFrom(core.DeviceOption(caffe2_pb2.CPU, 0, random_seed=1702))
    x = train.GaussianFill([], "X", shape=[64, 2], mean=0.0, std=1.0, run_once=0)
    y_gt = x.FC([w_gt, b_gt], "Y_gt")
    noise = train.GaussianFill([], "noise", shape=[64, 1], mean=0.0, std=1.0, run_once=0)
    y_noise = y_gt.Add(noise, "Y_noise").StopGradient([], "Y_noise")
    y_pred = x.FC([w, b], "Y_pred")
    loss = train.SquaredL2Distance([y_noise, y_pred], "dist").AveragedLoss([], ["loss"])
    grads = train.AddGradientOperators([loss])
    train.Iter(it, it)
    lr = train.LearningRate(it, "LR", base_lr=-0.1, policy="step", stepsize=20, gamma=0.9)
    train.WeightedSum([w, one, grads[w], lr], w)
    train.WeightedSum([b, one, grads[b], lr], b)
    return init_net.Proto(), train.Proto()


def toy_regression(repeat: int, batch_seconds: float = 0.2) -> list:
    init_net, train_net = toy_regression_nets()
    rows = []
    for executor in ("reference", "compiled"):
        ws = Workspace(f"toy-{executor}")
        make_runner(init_net, ws, "reference").run()
        runner = make_runner(train_net, ws, executor)
        rows.append(time_calls(f"train net RunNet ({executor})", runner.run, warmup=50, repeat=repeat,
                               batch_seconds=batch_seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("net", nargs="?")
    parser.add_argument("--init")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="tiny batches: a smoke test, not a measurement")
    args = parser.parse_args()
    batch = 0.005 if args.quick else 0.2
    net = load_net(args.net) if args.net else small_net()
    init_net = load_net(args.init) if args.init else None
    rows = bench_net(net, init_net, repeat=args.repeat, batch_seconds=batch)
    print(format_table(rows, f"net {net.name!r} ({len(net.op)} ops): per-call time"))
    by = {r.name: r.median_us for r in rows}
    print(f"RunNet compiled vs reference: {by['RunNet (reference)'] / by['RunNet (compiled)']:.1f}x; "
          f"RunNetOnce compiled vs reference: {by['RunNetOnce (reference)'] / by['RunNetOnce (compiled)']:.1f}x")
    if not args.net:
        print()
        toy = toy_regression(args.repeat, batch)
        print(format_table(toy, "toy regression train net (16 ops incl. gradients and SGD): per RunNet"))
        print(f"compiled speed-up: {toy[0].median_us / toy[1].median_us:.1f}x")


if __name__ == "__main__":
    main()
