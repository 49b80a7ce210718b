"""Caffe2's "Toy Regression" tutorial in its model-helper form: the same fit of y = W·x + B
(W = [2.0, 1.5], B = 0.5) built with ``model_helper``, ``brew`` and ``optimizer.build_sgd`` instead of
hand-written Iter/LearningRate/WeightedSum ops.

    python examples/tutorials/toy_regression_optimizer.py [OUTPUT_DIR] [--optimizer sgd|momentum|adam|adagrad|rmsprop]

Prints the train net (with the update ops the optimizer added), the learned parameters against the
truth, and writes the learned values and the loss curve to OUTPUT_DIR/toy_regression_optimizer.json.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from caffe2.proto import caffe2_pb2
from caffe2.python import brew, core, model_helper, optimizer, workspace

from tutorial_utils import output_dir

SEED = 1701
ITERATIONS = 100

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out", nargs="?", help="output directory")
parser.add_argument("--optimizer", default="sgd", choices=["sgd", "momentum", "adam", "adagrad", "rmsprop"])
args = parser.parse_args()
out = output_dir([args.out] if args.out else [])

model = model_helper.ModelHelper(name="toy_regression")
model.param_init_net.Proto().device_option.CopyFrom(core.DeviceOption(caffe2_pb2.CPU, 0, random_seed=SEED))
model.net.Proto().device_option.CopyFrom(core.DeviceOption(caffe2_pb2.CPU, 0, random_seed=SEED + 1))

# Ground truth and a fresh noisy batch every run, generated inside the net.
W_gt = model.param_init_net.GivenTensorFill([], "W_gt", shape=[1, 2], values=[2.0, 1.5])
B_gt = model.param_init_net.GivenTensorFill([], "B_gt", shape=[1], values=[0.5])
X = model.net.GaussianFill([], "X", shape=[64, 2], mean=0.0, std=1.0, run_once=0)
Y_gt = model.net.FC([X, W_gt, B_gt], "Y_gt")
noise = model.net.GaussianFill([], "noise", shape=[64, 1], mean=0.0, std=1.0, run_once=0)
Y_noise = model.net.StopGradient(model.net.Add([Y_gt, noise], "Y_noise_raw"), "Y_noise")

# The model: one fully connected layer, squared error averaged over the batch.
Y_pred = brew.fc(model, X, "Y_pred", dim_in=2, dim_out=1)
dist = model.net.SquaredL2Distance([Y_noise, Y_pred], "dist")
loss = model.net.AveragedLoss(dist, "loss")
model.AddGradientOperators([loss])

builders = {
    "sgd": lambda: optimizer.build_sgd(model, base_learning_rate=0.1, policy="step", stepsize=20, gamma=0.9),
    "momentum": lambda: optimizer.build_sgd(model, base_learning_rate=0.05, momentum=0.9, nesterov=1),
    "adam": lambda: optimizer.build_adam(model, base_learning_rate=0.1),
    "adagrad": lambda: optimizer.build_adagrad(model, base_learning_rate=0.5),
    "rmsprop": lambda: optimizer.build_rms_prop(model, base_learning_rate=0.05),
}
builders[args.optimizer]()
print("The train net after optimizer.build ({}):".format(args.optimizer))
print(model.net.Proto())

workspace.RunNetOnce(model.param_init_net)
workspace.CreateNet(model.net)
losses = []
for _ in range(ITERATIONS):
    workspace.RunNet(model.net.Proto().name)
    losses.append(float(workspace.FetchBlob("loss")))

w_final = workspace.FetchBlob("Y_pred_w")
b_final = workspace.FetchBlob("Y_pred_b")
print("After training, W is: {}".format(w_final))
print("After training, B is: {}".format(b_final))
print("Ground truth W is: {}".format(workspace.FetchBlob("W_gt")))
print("Ground truth B is: {}".format(workspace.FetchBlob("B_gt")))
print("Loss: first {:.4f}, last {:.4f}".format(losses[0], losses[-1]))
result = {"optimizer": args.optimizer, "W": w_final.reshape(-1).tolist(), "B": b_final.reshape(-1).tolist(),
          "losses": losses, "iterations": int(workspace.FetchBlob("optimizer_iteration")[0])}
(out / "toy_regression_optimizer.json").write_text(json.dumps(result, indent=1))
print(f"Wrote {out / 'toy_regression_optimizer.json'}")
