"""Learning more: the older CNNModelHelper API, where layers are model methods (model.FC,
model.Conv, model.Relu...) that create their parameters and initializers for you.

    python examples/tutorials/learn_more.py [OUTPUT_DIR] [TRAIN_ITERATIONS]

Part 1 rebuilds the intro tutorial's model with CNNModelHelper. Part 2 trains a LeNet-style
convnet on real MNIST digits read through an LMDB of TensorProtos (the records Caffe2's MNIST
tutorial uses), evaluates it on held-out digits with a second model that shares the parameters,
and plots the training curve (PNG, when matplotlib is installed). Part 2 needs the MNIST IDX files
(see tutorial_utils.mnist_dir) and the lmdb package; it is skipped, with a message, without them.
"""
from __future__ import annotations

import gzip
import json
import sys

import numpy as np
from caffe2.proto import caffe2_pb2
from caffe2.python import cnn, core, workspace

from tutorial_utils import mnist_dir, output_dir, save_plot

out = output_dir()
TRAIN_ITERATIONS = int(sys.argv[2]) if len(sys.argv) > 2 else 100
np.random.seed(0)

# ======================================================= Part 1: the intro model, CNN style
m = cnn.CNNModelHelper(name="my first net")
fc_1 = m.FC("data", "fc1", dim_in=100, dim_out=10)   # creates fc1_w and fc1_b in param_init_net
pred = m.Sigmoid(fc_1, "pred")
softmax, loss = m.SoftmaxWithLoss([pred, "label"], ["softmax", "loss"])
print(m.param_init_net.Proto())
print(m.net.Proto())
print("Parameters: {}".format([str(p) for p in m.params]))

workspace.FeedBlob("data", np.random.rand(16, 100).astype(np.float32))
workspace.FeedBlob("label", (np.random.rand(16) * 10).astype(np.int32))
workspace.RunNetOnce(m.param_init_net)
workspace.CreateNet(m.net)
workspace.RunNet(m.net.Proto().name, 10)
print("loss after 10 runs: {}".format(workspace.FetchBlob("loss")))

# ======================================================= Part 2: LeNet on real MNIST digits
digits_dir = mnist_dir()
try:
    import lmdb
except ImportError:
    lmdb = None
if digits_dir is None or lmdb is None:
    print("Part 2 skipped: it needs the MNIST IDX files and the lmdb package.")
    sys.exit(0)


def read_idx(path):
    """Images [N, 28, 28] or labels [N] from an IDX file (big-endian header, then uint8 data)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_lmdb(path, images, labels):
    """One record per digit: TensorProtos [image BYTE 1x28x28, label INT32], keyed by index."""
    env = lmdb.open(str(path), map_size=1 << 30)
    with env.begin(write=True) as txn:
        for i, (image, label) in enumerate(zip(images, labels)):
            protos = caffe2_pb2.TensorProtos()
            img = protos.protos.add()
            img.dims.extend([1, 28, 28])
            img.data_type = caffe2_pb2.TensorProto.BYTE
            img.byte_data = image.tobytes()
            lab = protos.protos.add()
            lab.data_type = caffe2_pb2.TensorProto.INT32
            lab.int32_data.append(int(label))
            txn.put("{:08d}".format(i).encode(), protos.SerializeToString())
    env.close()


images = read_idx(digits_dir / "t10k-images-idx3-ubyte.gz")
labels = read_idx(digits_dir / "t10k-labels-idx1-ubyte.gz")
train_db, test_db = out / "mnist-train-lmdb", out / "mnist-test-lmdb"
write_lmdb(train_db, images[:8000], labels[:8000])
write_lmdb(test_db, images[8000:9000], labels[8000:9000])
print("Wrote {} and {}".format(train_db, test_db))


def add_input(model, batch_size, db):
    data_uint8, label = model.TensorProtosDBInput([], ["data_uint8", "label"], batch_size=batch_size,
                                                  db=str(db), db_type="lmdb")
    data = model.Cast(data_uint8, "data", to=core.DataType.FLOAT)
    data = model.Scale(data, data, scale=float(1.0 / 256))  # pixels into [0, 1)
    data = model.StopGradient(data, data)                    # no gradient for the input
    return data, label


def add_lenet(model, data):
    # LeNet's layout with fewer channels than the classic 20/50/500, so that it trains in seconds.
    conv1 = model.Conv(data, "conv1", 1, 8, 5)               # 28x28 -> 24x24
    pool1 = model.MaxPool(conv1, "pool1", kernel=2, stride=2)
    conv2 = model.Conv(pool1, "conv2", 8, 16, 5)             # 12x12 -> 8x8
    pool2 = model.MaxPool(conv2, "pool2", kernel=2, stride=2)
    fc3 = model.FC(pool2, "fc3", 16 * 4 * 4, 128)
    fc3 = model.Relu(fc3, fc3)
    pred = model.FC(fc3, "pred", 128, 10)
    return model.Softmax(pred, "softmax")


train = cnn.CNNModelHelper(order="NCHW", name="mnist_train")
data, label = add_input(train, 64, train_db)
softmax = add_lenet(train, data)
xent = train.LabelCrossEntropy([softmax, label], "xent")
loss = train.AveragedLoss(xent, "loss")
train.Accuracy([softmax, label], "accuracy")
train.AddGradientOperators([loss])
ITER = train.Iter("iter")
LR = train.LearningRate(ITER, "LR", base_lr=-0.1, policy="step", stepsize=1, gamma=0.999)
ONE = train.param_init_net.ConstantFill([], "ONE", shape=[1], value=1.0)
for param in train.params:
    train.WeightedSum([param, ONE, train.param_to_grad[param], LR], param)
print("The train net has {} ops; the first gradient op is {}".format(
    len(train.net.Proto().op), next(op.type for op in train.net.Proto().op if op.is_gradient_op)))

# The test model reads other digits. With init_params=False its layers create no initializers: it
# runs on the parameter blobs the training left in the workspace (same names).
test = cnn.CNNModelHelper(order="NCHW", name="mnist_test", init_params=False)
data, label = add_input(test, 100, test_db)
softmax = add_lenet(test, data)
test.Accuracy([softmax, label], "accuracy")

workspace.RunNetOnce(train.param_init_net)
workspace.CreateNet(train.net, overwrite=True)
losses, accuracies = [], []
for i in range(TRAIN_ITERATIONS):
    workspace.RunNet(train.net.Proto().name)
    losses.append(float(workspace.FetchBlob("loss")))
    accuracies.append(float(workspace.FetchBlob("accuracy")))
    if i % 20 == 0 or i == TRAIN_ITERATIONS - 1:
        print("iter {:4d}: loss {:.4f}, batch accuracy {:.3f}".format(i, losses[-1], accuracies[-1]))

workspace.RunNetOnce(test.param_init_net)
workspace.CreateNet(test.net, overwrite=True)
test_accuracy = []
for _ in range(5):
    workspace.RunNet(test.net.Proto().name)
    test_accuracy.append(float(workspace.FetchBlob("accuracy")))
print("Test accuracy on 500 held-out digits: {:.3f}".format(np.mean(test_accuracy)))

(out / "learn_more.json").write_text(json.dumps(
    {"losses": losses, "train_accuracy": accuracies, "test_accuracy": float(np.mean(test_accuracy))}, indent=1))
save_plot(out / "learn_more_training.png", lambda plt: (
    plt.plot(losses, label="loss"), plt.plot(accuracies, label="batch accuracy"),
    plt.xlabel("iteration"), plt.legend()))
