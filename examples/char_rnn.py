"""Char-RNN: an LSTM learns to predict the next character of a text (Caffe2's char_rnn example,
written anew for netjit).

The model is ``rnn_cell.LSTM`` over one-hot characters, an FC to the vocabulary and a softmax,
trained with ``optimizer.build_sgd`` (plain SGD, the rate decaying by 0.9999 per iteration). The
text is cut into ``batch_size`` blocks; each iteration feeds the next ``seq_length`` characters of
every block and carries the LSTM state over from the previous iteration. Every ``iters_to_report`` iterations it
prints the mean loss since the last report and a string sampled from the model.

    python examples/char_rnn.py                                  # examples/data/lighthouse.txt
    python examples/char_rnn.py --iters 300 --hidden_size 64 --batch_size 8 --seed 1
    python examples/char_rnn.py --train_data my.txt --executor reference

The last line printed is a JSON summary (first and last report's loss, the sample, timings).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from caffe2.python import brew, core, model_helper, workspace
from caffe2.python.optimizer import build_sgd
from caffe2.python.rnn_cell import LSTM

DEFAULT_TEXT = Path(__file__).resolve().parent / "data" / "lighthouse.txt"


class CharRNN:
    """The text, its vocabulary, the training net, a forward-only net for sampling, and a net that
    carries the LSTM's last states into the next iteration's initial states."""

    def __init__(self, args: argparse.Namespace):
        self.seq_length = args.seq_length
        self.batch_size = args.batch_size
        self.hidden_size = args.hidden_size
        self.base_lr = args.lr
        self._forward_created = False
        self.text = Path(args.train_data).read_text(encoding="utf-8")
        self.vocab = sorted(set(self.text))
        self.char_to_idx = {ch: i for i, ch in enumerate(self.vocab)}
        self.D = len(self.vocab)
        print(f"Input has {self.D} characters. Total input size: {len(self.text)}")

    def create_model(self) -> None:
        model = model_helper.ModelHelper(name="char_rnn")
        input_blob, seq_lengths, hidden_init, cell_init, target = model.net.AddExternalInputs(
            "input_blob", "seq_lengths", "hidden_init", "cell_init", "target")
        hidden_all, self.hidden_output, _, self.cell_state = LSTM(
            model, input_blob, seq_lengths, (hidden_init, cell_init), self.D, self.hidden_size, scope="LSTM")
        output = brew.fc(model, hidden_all, None, dim_in=self.hidden_size, dim_out=self.D, axis=2)
        # T and N are the first two axes: the softmax runs over characters for each of T * N rows.
        softmax = model.net.Softmax(output, "softmax", axis=2)
        softmax_reshaped, _ = model.net.Reshape(softmax, ["softmax_reshaped", "_"], shape=[-1, self.D])
        # The sampling net is the model up to here: no loss, no gradients.
        self.forward_net = model.net.Clone("char_rnn_forward")
        xent = model.net.LabelCrossEntropy([softmax_reshaped, target], "xent")
        self.loss = model.net.AveragedLoss(xent, "loss")
        model.AddGradientOperators([self.loss])
        # The loss is a mean over the T * N predictions, so the rate is scaled by seq_length.
        build_sgd(model, base_learning_rate=self.base_lr * self.seq_length, policy="step", stepsize=1,
                  gamma=0.9999)
        self.model = model
        self.predictions = softmax
        self.prepare_state = core.Net("prepare_state")
        self.prepare_state.Copy(self.hidden_output, hidden_init)
        self.prepare_state.Copy(self.cell_state, cell_init)

    def _batch(self, positions: np.ndarray, starts: list[int], sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
        inputs = np.zeros([self.seq_length, self.batch_size, self.D], np.float32)
        target = np.zeros([self.seq_length * self.batch_size], np.int32)
        n = len(self.text)
        for e in range(self.batch_size):
            for i in range(self.seq_length):
                pos = starts[e] + positions[e]
                inputs[i, e, self.char_to_idx[self.text[pos]]] = 1
                target[i * self.batch_size + e] = self.char_to_idx[self.text[(pos + 1) % n]]
                positions[e] = (positions[e] + 1) % sizes[e]
        return inputs, target

    def train(self, iters: int, iters_to_report: int, sample_length: int, rng: np.random.Generator) -> dict:
        workspace.RunNetOnce(self.model.param_init_net)
        n = len(self.text)
        # Each batch row reads its own block of the text, wrapping around within it.
        block = n // self.batch_size
        starts = list(range(0, block * self.batch_size, block))
        sizes = [block] * self.batch_size
        sizes[-1] += n % self.batch_size
        positions = np.zeros(self.batch_size, np.int64)
        zeros = np.zeros([1, self.batch_size, self.hidden_size], np.float32)
        workspace.FeedBlob(self.hidden_output, zeros)
        workspace.FeedBlob(self.cell_state, zeros)
        workspace.CreateNet(self.prepare_state)
        reports, window, sample = [], [], ""
        last_time, t0 = time.perf_counter(), time.perf_counter()
        for num_iter in range(1, iters + 1):
            workspace.FeedBlob("seq_lengths", np.full(self.batch_size, self.seq_length, np.int32))
            workspace.RunNet(self.prepare_state.Name())
            inputs, target = self._batch(positions, starts, sizes)
            workspace.FeedBlob("input_blob", inputs)
            workspace.FeedBlob("target", target)
            if num_iter == 1:
                workspace.CreateNet(self.model.net)
            workspace.RunNet(self.model.net.Name())
            window.append(float(workspace.FetchBlob(self.loss)) * self.seq_length)
            if num_iter % iters_to_report == 0 or num_iter == iters:
                now = time.perf_counter()
                mean = float(np.mean(window))
                reports.append(mean)
                print(f"---------- Iteration {num_iter} ----------")
                chars = len(window) * self.seq_length * self.batch_size
                print(f"Characters per second: {int(chars / (now - last_time))}")
                print(f"Loss since last report: {mean:.4f}")
                sample = self.generate(sample_length, self.vocab[rng.integers(self.D)], rng)
                print(sample)
                window, last_time = [], time.perf_counter()
        return {"reports": reports, "first_loss": reports[0], "last_loss": reports[-1], "sample": sample,
                "seconds": time.perf_counter() - t0, "vocab": self.D}

    def generate(self, num_characters: int, ch: str, rng: np.random.Generator) -> str:
        """Feed one character at a time (a 1-step sequence) and draw the next from the softmax. The
        training state is saved first and restored after, so sampling does not disturb training."""
        saved = {b: workspace.FetchBlob(b) for b in (self.hidden_output, self.cell_state)}
        if not self._forward_created:
            workspace.CreateNet(self.forward_net)
            self._forward_created = True
        text = ch
        for _ in range(num_characters):
            workspace.FeedBlob("seq_lengths", np.ones(self.batch_size, np.int32))
            workspace.RunNet(self.prepare_state.Name())
            inputs = np.zeros([1, self.batch_size, self.D], np.float32)
            inputs[0, 0, self.char_to_idx[ch]] = 1
            workspace.FeedBlob("input_blob", inputs)
            workspace.RunNet(self.forward_net.Name())
            p = workspace.FetchBlob(self.predictions)[0, 0].astype(np.float64)
            ch = self.vocab[rng.choice(self.D, p=p / p.sum())]
            text += ch
        for blob, value in saved.items():
            workspace.FeedBlob(blob, value)
        return text


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="netjit: Char RNN training (Caffe2's example)")
    parser.add_argument("--train_data", type=str, default=str(DEFAULT_TEXT), help="a text file to learn")
    parser.add_argument("--seq_length", type=int, default=25, help="characters per training sequence")
    parser.add_argument("--batch_size", type=int, default=1, help="training batch size")
    parser.add_argument("--iters", type=int, default=2000, help="training iterations")
    parser.add_argument("--iters_to_report", type=int, default=500, help="report (and sample) every N iterations")
    parser.add_argument("--hidden_size", type=int, default=100, help="LSTM hidden size")
    parser.add_argument("--lr", type=float, default=0.1, help="base learning rate (times seq_length)")
    parser.add_argument("--sample_length", type=int, default=200, help="characters to sample per report")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the sampling")
    parser.add_argument("--executor", choices=["compiled", "reference"], default=None,
                        help="netjit executor (default: compiled, or $NETJIT_EXECUTOR)")
    args = parser.parse_args(argv)
    if args.executor:
        os.environ["NETJIT_EXECUTOR"] = args.executor
    workspace.ResetWorkspace()
    model = CharRNN(args)
    model.create_model()
    # One seed per initializer: the same weights on every run with the same --seed.
    for i, op in enumerate(model.model.param_init_net.Proto().op):
        op.device_option.random_seed = args.seed * 1000 + i
    summary = model.train(args.iters, args.iters_to_report, args.sample_length, np.random.default_rng(args.seed))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    workspace.GlobalInit(["caffe2", "--caffe2_log_level=2"])
    main()
