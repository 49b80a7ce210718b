"""Caffe2 "Basics" tutorial, as a script: workspaces, operators, nets, drawing a net, the cost of
RunNetOnce against CreateNet + RunNet, and Python functions as operators (with gradients).

    python examples/tutorials/basics.py [OUTPUT_DIR] [TIMING_ITERATIONS]

Writes the net graph (.dot always, .png when Graphviz is installed) to OUTPUT_DIR.
"""
from __future__ import annotations

import sys
import time

import numpy as np
from caffe2.proto import caffe2_pb2
from caffe2.python import core, net_drawer, workspace

from tutorial_utils import output_dir

out = output_dir()
TIMING_ITERATIONS = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
np.random.seed(0)

# =============================================================================== Workspaces
# Blobs live in a workspace; the "default" one is current when the process starts.
print("Current blobs in the workspace: {}".format(workspace.Blobs()))
print("Workspace has blob 'X'? {}".format(workspace.HasBlob("X")))

X = np.random.randn(2, 3).astype(np.float32)
print("Generated X from numpy:\n{}".format(X))
workspace.FeedBlob("X", X)
print("Current blobs in the workspace: {}".format(workspace.Blobs()))
print("Workspace has blob 'X'? {}".format(workspace.HasBlob("X")))
print("Fetched X:\n{}".format(workspace.FetchBlob("X")))
np.testing.assert_array_equal(X, workspace.FetchBlob("X"))

# Fetching a blob that does not exist is an error.
try:
    workspace.FetchBlob("invincible_pink_unicorn")
except Exception as err:
    print("As expected, fetching a missing blob fails: {}".format(type(err).__name__))

# Several workspaces can coexist; each has its own blobs.
print("Current workspace: {}".format(workspace.CurrentWorkspace()))
print("Current blobs in the workspace: {}".format(workspace.Blobs()))
workspace.SwitchWorkspace("gutentag", True)  # created because it is missing
print("Current workspace: {}".format(workspace.CurrentWorkspace()))
print("Current blobs in the workspace: {}".format(workspace.Blobs()))
workspace.SwitchWorkspace("default")
print("Current workspace: {}".format(workspace.CurrentWorkspace()))
print("Current blobs in the workspace: {}".format(workspace.Blobs()))
workspace.ResetWorkspace()
print("Current blobs in the workspace after reset: {}".format(workspace.Blobs()))

# ================================================================================ Operators
# An operator is a protobuf message: a type, input and output blob names, and arguments.
op = core.CreateOperator(
    "Relu",   # the type of the operator
    ["X"],    # its inputs, by blob name
    ["Y"],    # its outputs, by blob name
)
print("Type of the created op is: {}".format(type(op)))
print("Content:\n")
print(str(op))

workspace.FeedBlob("X", np.random.randn(2, 3).astype(np.float32))
workspace.RunOperatorOnce(op)
print("Current blobs in the workspace: {}\n".format(workspace.Blobs()))
print("X:\n{}\n".format(workspace.FetchBlob("X")))
print("Y:\n{}\n".format(workspace.FetchBlob("Y")))
print("Expected:\n{}\n".format(np.maximum(workspace.FetchBlob("X"), 0)))
np.testing.assert_array_equal(workspace.FetchBlob("Y"), np.maximum(workspace.FetchBlob("X"), 0))

# Arguments are keyword arguments; a filler needs no input at all.
op = core.CreateOperator("GaussianFill", [], ["Z"], shape=[100, 100], mean=1.0, std=1.0)
print("Content of op:\n")
print(str(op))
workspace.RunOperatorOnce(op)
temp = workspace.FetchBlob("Z")
print("Z: mean {:.3f}, std {:.3f} (asked for 1.0 and 1.0)".format(temp.mean(), temp.std()))
counts, edges = np.histogram(temp, bins=10)
print("Histogram of Z: {}".format(counts.tolist()))

# ===================================================================================== Nets
# A net is a list of operators. core.Net builds one; each op method adds an operator.
net = core.Net("my_first_net")
print("Current network proto:\n\n{}".format(net.Proto()))

X = net.GaussianFill([], ["X"], mean=0.0, std=1.0, shape=[2, 3], run_once=0)
print("New network proto:\n\n{}".format(net.Proto()))
print("Type of X is: {}".format(type(X)))
print("The blob name is: {}".format(str(X)))

W = net.GaussianFill([], ["W"], mean=0.0, std=1.0, shape=[5, 3], run_once=0)
b = net.ConstantFill([], ["b"], shape=[5], value=1.0, run_once=0)
# Methods on a BlobReference add ops with that blob as the first input.
Y = X.FC([W, b], ["Y"])
print("Current network proto:\n\n{}".format(net.Proto()))

graph = net_drawer.GetPydotGraph(net.Proto().op, "mynet", rankdir="LR")
dot_path = net_drawer.write_graph(graph, out / "my_first_net.dot")
print("Wrote the graph: {}".format(dot_path))
if net_drawer.dot_available():
    print("Wrote the graph: {}".format(net_drawer.write_graph(graph, out / "my_first_net.png")))

# Run it once, on the CPU by default.
workspace.ResetWorkspace()
print("Current blobs in the workspace: {}".format(workspace.Blobs()))
workspace.RunNetOnce(net)
print("Blobs in the workspace after execution: {}".format(workspace.Blobs()))
for name in workspace.Blobs():
    print("{}:\n{}".format(name, workspace.FetchBlob(name)))
np.testing.assert_allclose(workspace.FetchBlob("Y"),
                           workspace.FetchBlob("X") @ workspace.FetchBlob("W").T + workspace.FetchBlob("b"),
                           rtol=1e-5, atol=1e-6)

# RunNetOnce builds the net every time; CreateNet builds it once and RunNet only runs it.
workspace.ResetWorkspace()
workspace.CreateNet(net)
start = time.time()
for _ in range(TIMING_ITERATIONS):
    workspace.RunNetOnce(net)
once = (time.time() - start) / TIMING_ITERATIONS
start = time.time()
for _ in range(TIMING_ITERATIONS):
    workspace.RunNet(net.Proto().name)
created = (time.time() - start) / TIMING_ITERATIONS
print("Run time per RunNetOnce: {:.6f} s".format(once))
print("Run time per RunNet: {:.6f} s".format(created))

# Device options say where an op runs; this CPU option gives the same result.
device_net = core.Net("my_device_net")
with core.DeviceScope(core.DeviceOption(caffe2_pb2.CPU, 0)):
    device_net.Relu(["Y"], ["Y_relu"])
print("Op with a device option:\n{}".format(device_net.Proto().op[0]))
workspace.RunNetOnce(device_net)

# =============================================================================== Python ops
# A Python function can be an operator. It gets lists of tensor handles for its inputs and
# outputs: .data is a numpy view, .feed() replaces the content, .reshape() resizes.
def f(inputs, outputs):
    outputs[0].feed(2 * inputs[0].data)


workspace.ResetWorkspace()
net = core.Net("tutorial")
net.Python(f)(["x"], ["y"])
workspace.FeedBlob("x", np.array([3.0]))
workspace.RunNetOnce(net)
print("Python op: 2 * {} = {}".format(workspace.FetchBlob("x"), workspace.FetchBlob("y")))


def f_reshape(inputs, outputs):
    outputs[0].reshape(inputs[0].shape)
    outputs[0].data[...] = 2 * inputs[0].data


net = core.Net("tutorial_reshape")
net.Python(f_reshape)(["x"], ["z"])
workspace.RunNetOnce(net)
print("Python op writing into .data: {}".format(workspace.FetchBlob("z")))


# With pass_workspace=True the function also gets the workspace and can read any blob.
def f_workspace(inputs, outputs, workspace):
    outputs[0].feed(2 * workspace.blobs["x"].fetch())


net = core.Net("tutorial_workspace")
net.Python(f_workspace, pass_workspace=True)([], ["w"])
workspace.RunNetOnce(net)
print("Python op reading the workspace: {}".format(workspace.FetchBlob("w")))


# A gradient function makes the op differentiable. It gets [inputs, outputs, output gradients]
# and writes the input gradients.
def grad_f(inputs, outputs):
    grad_output = inputs[2]
    grad_input = outputs[0]
    grad_input.reshape(grad_output.shape)
    grad_input.data[...] = grad_output.data * 2


workspace.ResetWorkspace()
net = core.Net("tutorial_gradient")
net.Python(f, grad_f)(["x"], ["y"])
workspace.FeedBlob("x", np.array([3.0]))
net.AddGradientOperators(["y"])
print("Net with the Python op and its gradient:\n{}".format(net.Proto()))
workspace.RunNetOnce(net)
print("x_grad = {}".format(workspace.FetchBlob("x_grad")))
assert workspace.FetchBlob("x_grad").tolist() == [2.0]
