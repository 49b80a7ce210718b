"""examples/char_rnn.py runs as a user runs it (a subprocess, default executor): the loss falls over
a short training run and the sampled text is drawn from the training text's characters."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "char_rnn.py"
TEXT = REPO / "examples" / "data" / "lighthouse.txt"


def run_char_rnn(*args: str) -> tuple[dict, str]:
    env = dict(os.environ)
    env.pop("NETJIT_EXECUTOR", None)  # the default (compiled) executor, as a user gets it
    env.setdefault("OPENBLAS_NUM_THREADS", "1")   # tiny GEMMs: a second BLAS thread only costs
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          env=env, cwd=str(REPO))
    assert proc.returncode == 0, f"char_rnn.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout


def test_char_rnn_loss_falls_and_samples_text():
    summary, out = run_char_rnn("--iters", "90", "--iters_to_report", "30", "--hidden_size", "32",
                                "--batch_size", "4", "--seq_length", "16", "--sample_length", "40", "--seed", "3")
    reports = summary["reports"]
    assert len(reports) == 3
    assert reports[-1] < reports[0] - 2.0, reports          # summed over 16 steps: ln(41) * 16 = 59 at chance
    assert reports[0] < 16 * 4.0                             # starts near chance, not diverging
    vocab = set(TEXT.read_text(encoding="utf-8"))
    assert summary["vocab"] == len(vocab)
    assert len(summary["sample"]) == 41 and set(summary["sample"]) <= vocab
    assert out.count("Loss since last report") == 3
