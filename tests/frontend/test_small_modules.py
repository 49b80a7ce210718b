"""dyndep, timeout_guard, experiment_util and core_gradients under their caffe2.python names."""
import argparse
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from caffe2.python import core, core_gradients, dyndep, experiment_util, timeout_guard


def test_dyndep_missing_path_is_ignored_with_a_message(capsys):
    dyndep.InitOpsLibrary("@/caffe2/caffe2/distributed:file_store_handler_ops")
    assert "Ignoring @/caffe2/caffe2/distributed:file_store_handler_ops" in capsys.readouterr().out
    assert dyndep.GetImportedOpsLibraries() == set()


def test_dyndep_existing_library_is_refused_naming_the_path(tmp_path):
    lib = tmp_path / "libmy_ops.so"
    lib.write_bytes(b"\x7fELF")
    with pytest.raises(RuntimeError, match="libmy_ops.so") as err:
        dyndep.InitOpsLibrary(str(lib))
    assert "cannot load the C++ operator library" in str(err.value)


def test_complete_in_time_passes_when_fast():
    with timeout_guard.CompleteInTimeOrDie(5) as watcher:
        pass
    watcher.join(1)
    assert not watcher.is_alive() and not watcher.timed_out


def test_complete_in_time_interrupts_a_hung_block():
    # A job started in the background by a non-interactive shell (as CI may be) inherits SIGINT
    # ignored, and then nothing turns the guard's SIGINT into KeyboardInterrupt: the guard falls
    # back to its forced exit after the grace period. Test the interrupt with Python's handler on.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    start = time.monotonic()
    try:
        _run_hung_block(start)
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_hung_block(start: float) -> None:
    with pytest.raises(KeyboardInterrupt):
        with timeout_guard.CompleteInTimeOrDie(0.3, grace_secs=30) as watcher:
            time.sleep(10)
    assert time.monotonic() - start < 5
    watcher.join(2)
    assert watcher.timed_out and not watcher.is_alive()   # the block ended: no forced exit


def test_euthanize_ends_a_process_that_ignores_the_interrupt():
    code = textwrap.dedent("""
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)      # a hang that swallows KeyboardInterrupt
        from caffe2.python import timeout_guard
        timeout_guard.EuthanizeIfNecessary(0.2, grace_secs=0.2)
        time.sleep(20)
    """)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == timeout_guard.FORCE_EXIT_STATUS
    assert time.monotonic() - start < 15
    assert "Timeout guard: timeout after 0.2 secs" in proc.stderr


def test_model_trainer_log_writes_csv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = []

    class Sink(experiment_util.ExternalLogger):
        def set_runtime_args(self, runtime_args):
            seen.append(runtime_args)

        def log(self, log_dict):
            seen.append(dict(log_dict))

    args = argparse.Namespace(batch_size=32)
    log = experiment_util.ModelTrainerLog("exp", args, external_loggers=[Sink()])
    log.log(input_count=32, batch_count=1, additional_values={"loss": 1.5, "accuracy": 0.25})
    log.log(input_count=64, batch_count=2, additional_values={"loss": 1.0, "accuracy": 0.5})
    lines = (tmp_path / log.filename).read_text().splitlines()
    assert lines[0] == "# Namespace(batch_size=32)"
    assert lines[1] == ("time_spent,cumulative_time_spent,input_count,cumulative_input_count,"
                        "cumulative_batch_count,inputs_per_sec,accuracy,loss")
    assert lines[3].split(",")[2:5] == ["32", "64", "2"] and lines[3].endswith(",0.5,1.0")
    assert seen[0]["batch_size"] == 32 and seen[0]["experiment_id"] == log.experiment_id
    assert seen[2]["loss"] == 1.0


def test_core_gradients_registry_and_backward_pass():
    assert core_gradients.GradientRegistry is core.GradientRegistry
    ops = [core.CreateOperator("Relu", ["x"], ["y"])]
    grad_ops, grads = core_gradients.GetBackwardPass(ops, ["y"])
    assert [op.type for op in grad_ops] == ["ConstantFill", "ReluGradient"]
    assert str(grads[core.BlobReference("x")]) == "x_grad"

    @core_gradients.GradientRegistry.RegisterGradient("MyIdentityForGradTest")
    def _grad(op, g_output):
        return [core.CreateOperator("Copy", [g_output[0]], [op.input[0] + "_grad"])], [op.input[0] + "_grad"]
    op = core.CreateOperator("Relu", ["a"], ["b"])
    op.type = "MyIdentityForGradTest"
    gops, g_in = core_gradients.GetGradientForOp(op, ["b_grad"])
    assert [o.type for o in gops] == ["Copy"] and g_in == ["a_grad"]
    assert np.asarray(core_gradients.GradientSlice("i", "v")).tolist() == ["i", "v"]
