"""Caffe2 "Intro Tutorial", as a script: blobs, a model built with ModelHelper, training runs, and
the gradient operators Caffe2 adds for you.

    python examples/tutorials/intro.py [OUTPUT_DIR]

It prints what the tutorial prints (arrays, net protos, softmax and loss) and writes the two net
protos as text into OUTPUT_DIR (see tutorial_utils.output_dir).
"""
from __future__ import annotations

import numpy as np
from caffe2.python import model_helper, workspace

from tutorial_utils import output_dir

np.random.seed(0)
out = output_dir()

# --- Blobs -------------------------------------------------------------------------------
# A workspace maps names to blobs. Anything numpy can hold can be fed in and fetched back.
x = np.random.rand(4, 3, 2)
print(x)
print(x.shape)
workspace.FeedBlob("my_x", x)
x2 = workspace.FetchBlob("my_x")
print(x2)
assert np.array_equal(x, x2)

# --- Data --------------------------------------------------------------------------------
# 16 random samples of 100 features, and an integer label in [0, 9] for each.
data = np.random.rand(16, 100).astype(np.float32)
label = (np.random.rand(16) * 10).astype(np.int32)
workspace.FeedBlob("data", data)
workspace.FeedBlob("label", label)

# --- The model ---------------------------------------------------------------------------
# ModelHelper keeps two nets: param_init_net creates the parameters once, net runs every step.
m = model_helper.ModelHelper(name="my first net")
weight = m.param_init_net.XavierFill([], "fc_w", shape=[10, 100])
bias = m.param_init_net.ConstantFill([], "fc_b", shape=[10])
fc_1 = m.net.FC(["data", "fc_w", "fc_b"], "fc1")
pred = m.net.Sigmoid(fc_1, "pred")
softmax, loss = m.net.SoftmaxWithLoss([pred, "label"], ["softmax", "loss"])

print(m.net.Proto())
print(m.param_init_net.Proto())

# --- Running it --------------------------------------------------------------------------
# Initialise the parameters once, then create the net and run it on fresh data batches.
workspace.RunNetOnce(m.param_init_net)
workspace.CreateNet(m.net)
for _ in range(100):
    data = np.random.rand(16, 100).astype(np.float32)
    label = (np.random.rand(16) * 10).astype(np.int32)
    workspace.FeedBlob("data", data)
    workspace.FeedBlob("label", label)
    workspace.RunNet(m.name, 10)  # ten runs on the same batch

print(workspace.FetchBlob("softmax"))
print(workspace.FetchBlob("loss"))

# --- Backward pass -----------------------------------------------------------------------
# One call appends every gradient op the loss needs; the net is re-created with them.
m.AddGradientOperators([loss])
workspace.CreateNet(m.net, overwrite=True)
workspace.RunNet(m.net, 10)
print(m.net.Proto())

print("Gradient blobs:", ", ".join(sorted(str(g) for g in m.grad_map.values())))
print("fc_w_grad norm: {:.6f}".format(float(np.linalg.norm(workspace.FetchBlob("fc_w_grad")))))

(out / "intro_net.pbtxt").write_text(str(m.net.Proto()))
(out / "intro_init_net.pbtxt").write_text(str(m.param_init_net.Proto()))
print(f"Wrote {out / 'intro_net.pbtxt'} and {out / 'intro_init_net.pbtxt'}")
