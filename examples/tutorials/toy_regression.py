"""Caffe2 "Toy Regression" tutorial, as a script: fit y = W·x + B to noisy samples of
W = [2.0, 1.5], B = 0.5 with plain SGD, everything (data, loss, gradients, updates) in Caffe2 nets.

    python examples/tutorials/toy_regression.py [OUTPUT_DIR]

Prints the nets, the learned parameters against the truth, and writes a plot of the data and the
fitted plane (PNG, when matplotlib is installed) plus the learned values to OUTPUT_DIR.
"""
from __future__ import annotations

import json

import numpy as np
from caffe2.proto import caffe2_pb2
from caffe2.python import core, workspace

from tutorial_utils import output_dir, save_plot

SEED = 1701          # fixes the initial weights and every batch, so the run is reproducible
ITERATIONS = 100
out = output_dir()

# --- The init net: parameters, ground truth and constants ---------------------------------
# Nets get a device option carrying the random seed; the random fillers draw from it.
seeded = core.DeviceOption(caffe2_pb2.CPU, 0, random_seed=SEED)
init_net = core.Net("init")
init_net.Proto().device_option.CopyFrom(seeded)
W = init_net.UniformFill([], "W", shape=[1, 2], min=-1.0, max=1.0)
B = init_net.ConstantFill([], "B", shape=[1], value=0.0)
W_gt = init_net.GivenTensorFill([], "W_gt", shape=[1, 2], values=[2.0, 1.5])
B_gt = init_net.GivenTensorFill([], "B_gt", shape=[1], values=[0.5])
ONE = init_net.ConstantFill([], "ONE", shape=[1], value=1.0)
ITER = init_net.ConstantFill([], "ITER", shape=[1], value=0, dtype=core.DataType.INT64)

# --- The train net ------------------------------------------------------------------------
train_net = core.Net("train")
train_net.Proto().device_option.CopyFrom(core.DeviceOption(caffe2_pb2.CPU, 0, random_seed=SEED + 1))
# A fresh batch every run: x ~ N(0, 1), y = W_gt·x + B_gt + N(0, 1) noise.
X = train_net.GaussianFill([], "X", shape=[64, 2], mean=0.0, std=1.0, run_once=0)
Y_gt = X.FC([W_gt, B_gt], "Y_gt")
noise = train_net.GaussianFill([], "noise", shape=[64, 1], mean=0.0, std=1.0, run_once=0)
Y_noise = Y_gt.Add(noise, "Y_noise")
# The targets are data: no gradient may flow back into the ground-truth parameters.
Y_noise = Y_noise.StopGradient([], "Y_noise")

# The model we train, its squared error and the mean over the batch.
Y_pred = X.FC([W, B], "Y_pred")
dist = train_net.SquaredL2Distance([Y_noise, Y_pred], "dist")
loss = dist.AveragedLoss([], ["loss"])

print("Before the gradient operators:")
print(train_net.Proto())

gradient_map = train_net.AddGradientOperators([loss])
print("After AddGradientOperators:")
print(train_net.Proto())

# SGD: lr = -0.1 · 0.9^⌊iter/20⌋, then W ← W + lr · dW (WeightedSum in place).
train_net.Iter(ITER, ITER)
LR = train_net.LearningRate(ITER, "LR", base_lr=-0.1, policy="step", stepsize=20, gamma=0.9)
train_net.WeightedSum([W, ONE, gradient_map[W], LR], W)
train_net.WeightedSum([B, ONE, gradient_map[B], LR], B)

print("The complete train net:")
print(train_net.Proto())

# --- Training ------------------------------------------------------------------------------
workspace.RunNetOnce(init_net)
workspace.CreateNet(train_net)
print("Before training, W is: {}".format(workspace.FetchBlob("W")))
print("Before training, B is: {}".format(workspace.FetchBlob("B")))
losses = []
for _ in range(ITERATIONS):
    workspace.RunNet(train_net.Proto().name)
    losses.append(float(workspace.FetchBlob("loss")))

w_final = workspace.FetchBlob("W")
b_final = workspace.FetchBlob("B")
print("After training, W is: {}".format(w_final))
print("After training, B is: {}".format(b_final))
print("Ground truth W is: {}".format(workspace.FetchBlob("W_gt")))
print("Ground truth B is: {}".format(workspace.FetchBlob("B_gt")))
print("Loss: first {:.4f}, last {:.4f}".format(losses[0], losses[-1]))

result = {"W": w_final.reshape(-1).tolist(), "B": b_final.reshape(-1).tolist(), "losses": losses,
          "iterations": int(workspace.FetchBlob("ITER")[0])}
(out / "toy_regression.json").write_text(json.dumps(result, indent=1))
print(f"Wrote {out / 'toy_regression.json'}")

# --- A look at the fit -----------------------------------------------------------------------
x_batch = workspace.FetchBlob("X")
y_batch = workspace.FetchBlob("Y_noise")


def draw(plt):
    # Project onto the learned direction so the 2-D input fits a 1-D plot.
    proj = x_batch @ w_final.reshape(-1)
    plt.scatter(proj, y_batch.reshape(-1), s=10, label="last batch")
    grid = np.linspace(proj.min(), proj.max(), 50)
    plt.plot(grid, grid + b_final[0], "r-", label="fit: y = W·x + B")
    plt.xlabel("W·x")
    plt.ylabel("y")
    plt.legend()
    plt.title("Toy regression after {} iterations".format(ITERATIONS))


save_plot(out / "toy_regression.png", draw)
save_plot(out / "toy_regression_loss.png", lambda plt: (plt.plot(losses), plt.xlabel("iteration"),
                                                        plt.ylabel("loss")))
