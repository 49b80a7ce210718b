"""Run a LeNet exported by real Caffe2 (PyTorch -> ONNX -> Caffe2) on the real MNIST test set.

The model pair lives in ../shared/models/lenet_pytorch_export (binary NetDefs with Caffe2's
legacy args: Conv ``kernels/strides/pads``, Add ``broadcast=1, axis=1``, Reshape with a ``shape``
arg). Input blob "1" is float32 [N, 1, 28, 28] scaled to [0, 1]; output blob "26" holds the
logits [N, 10].

    python examples/lenet_export_predict.py                 # all 10,000 test digits
    python examples/lenet_export_predict.py --limit 1000 --batch-size 250 --executor reference
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from netjit import workspace
from netjit.compiler.runner import EXECUTORS, default_executor
from netjit.mnist_data import read_idx
from netjit.proto.io import load_net

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def load_mnist_test(mnist_dir: Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 [N, 1, 28, 28] in [0, 1] and labels as int64 [N]."""
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return (images.astype(np.float32) / 255.0)[:, None], labels.astype(np.int64)


def predict_all(predictor, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits for every image, in batches (the predict net accepts any batch size)."""
    return np.concatenate([predictor.run([images[start:start + batch_size]])[0]
                           for start in range(0, len(images), batch_size)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=SHARED / "models" / "lenet_pytorch_export")
    parser.add_argument("--mnist-dir", type=Path, default=SHARED / "data" / "mnist")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N test digits")
    parser.add_argument("--executor", choices=EXECUTORS, default=None,
                        help="compiled (the default) or the numpy reference, as NETJIT_EXECUTOR selects")
    args = parser.parse_args(argv)
    if args.executor:
        os.environ["NETJIT_EXECUTOR"] = args.executor

    init_net = load_net(args.model_dir / "init_net.pb")
    predict_net = load_net(args.model_dir / "predict_net.pb")
    print(f"init net {init_net.name!r}: {len(init_net.op)} ops; predict net {predict_net.name!r}: "
          f"{' '.join(op.type for op in predict_net.op)}")
    images, labels = load_mnist_test(args.mnist_dir, args.limit)

    start = time.perf_counter()
    predictor = workspace.Predictor(init_net, predict_net)
    logits = predict_all(predictor, images, args.batch_size)
    seconds = time.perf_counter() - start

    predicted = logits.argmax(axis=1)
    accuracy = float((predicted == labels).mean())
    print(f"{len(labels)} MNIST test digits in {seconds:.2f} s ({default_executor()} executor, "
          f"batch {args.batch_size}): "
          f"top-1 accuracy {100 * accuracy:.2f}%")
    print("first predictions (label -> predicted):",
          ", ".join(f"{t}->{p}" for t, p in zip(labels[:10], predicted[:10])))
    wrong = np.flatnonzero(predicted != labels)[:5]
    if len(wrong):
        print("some mistakes (index: label -> predicted):",
              ", ".join(f"{i}: {labels[i]}->{predicted[i]}" for i in wrong))
    return 0


if __name__ == "__main__":
    sys.exit(main())
