"""``caffe2.python.hypothesis_test_util``: property-based op tests as Caffe2 wrote them.

A Caffe2 op test runs unchanged::

    from hypothesis import given
    import caffe2.python.hypothesis_test_util as hu
    from caffe2.python import core

    class TestSoftsign(hu.HypothesisTestCase):
        @given(X=hu.tensor(), **hu.gcs)
        def test_softsign(self, X, gc, dc):
            op = core.CreateOperator("Softsign", ["X"], ["Y"])
            self.assertReferenceChecks(gc, op, [X], lambda X: (X / (1 + np.abs(X)),))
            self.assertDeviceChecks(dc, op, [X], [0])
            self.assertGradientChecks(gc, op, [X], 0, [0])

- ``assertReferenceChecks(gc, op, inputs, reference)`` runs the op as a one-op net (compiled by
  default), compares with ``reference(*inputs)`` and with the op's shape/type inference (a mismatch
  fails the test: Caffe2 only logged it unless CAFFE2_ASSERT_SHAPEINFERENCE=1; netjit's inference is
  meant to be exact);
- ``assertGradientChecks(gc, op, inputs, i, outputs_with_grads)`` compares the registered gradient
  with finite differences (:mod:`netjit.gradient_checker`);
- ``assertDeviceChecks(dc, op, inputs, outputs)`` runs every device option in ``dc`` through both
  executors and compares (:mod:`netjit.device_checker`);
- ``assertValidationChecks(gc, op, inputs, validator)`` hands inputs and outputs to ``validator``.

This build has only the CPU: ``gcs`` and ``gcs_cpu_only`` give the CPU device option; a test that
draws from ``gcs_gpu_only``/``gcs_cuda_only`` is skipped (there is no GPU device option to give).
Hypothesis settings come from the ``CAFFE2_HYPOTHESIS_PROFILE`` profile ("dev": 10 examples, the
default; "debug": 1000; "sandcastle": 100, derandomized).

    >>> import hypothesis.strategies as st
    >>> sorted(gcs)
    ['dc', 'gc']
"""
from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import unittest
from typing import Any, Callable, Iterator, Sequence

import hypothesis
import hypothesis.extra.numpy
import hypothesis.strategies as st
import numpy as np

from netjit import core, device_checker, gradient_checker, test_util, workspace
from netjit.proto import caffe2_pb2

_LOG = logging.getLogger(__name__)

# No deadline: the first example of an op compiles its kernel (about 0.1-1 s), which is not slowness
# of the op. Under CI the "dev" examples are derandomized, so a CI run is reproducible.
_COMMON = dict(suppress_health_check=[hypothesis.HealthCheck.too_slow], database=None, deadline=None)
hypothesis.settings.register_profile("sandcastle", hypothesis.settings(derandomize=True, max_examples=100, **_COMMON))
hypothesis.settings.register_profile("dev", hypothesis.settings(
    max_examples=10, derandomize=os.getenv("CI", "").lower() in ("1", "true"), **_COMMON))
hypothesis.settings.register_profile("debug", hypothesis.settings(max_examples=1000, **_COMMON))
hypothesis.settings.load_profile("sandcastle" if os.getenv("SANDCASTLE") == "1"
                                 else os.getenv("CAFFE2_HYPOTHESIS_PROFILE", "dev"))


def is_sandcastle() -> bool:
    return os.getenv("SANDCASTLE") == "1" or os.getenv("TW_JOB_USER") == "sandcastle"


def is_travis() -> bool:
    return "TRAVIS" in os.environ


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------
def dims(min_value: int = 1, max_value: int = 5) -> st.SearchStrategy:
    return st.integers(min_value=min_value, max_value=max_value)


def elements_of_type(dtype: Any = np.float32, filter_: Callable[[Any], bool] | None = None) -> st.SearchStrategy:
    """Caffe2's element ranges: floats in [-1, 1], non-negative ints, booleans."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        elems = st.floats(min_value=-1.0, max_value=1.0, width=min(dtype.itemsize * 8, 64))
    elif dtype == np.int32:
        elems = st.integers(min_value=0, max_value=2 ** 31 - 1)
    elif dtype == np.int64:
        elems = st.integers(min_value=0, max_value=2 ** 63 - 1)
    elif dtype == np.bool_:
        elems = st.booleans()
    else:
        raise ValueError(f"Unexpected dtype {dtype} without elements provided")
    return elems if filter_ is None else elems.filter(filter_)


def arrays(dims: Any, dtype: Any = np.float32, elements: st.SearchStrategy | None = None) -> st.SearchStrategy:
    if elements is None:
        elements = elements_of_type(dtype)
    return hypothesis.extra.numpy.arrays(dtype, dims, elements=elements)


def tensor(min_dim: int = 1, max_dim: int = 4, dtype: Any = np.float32, elements: Any = None,
           **kwargs: Any) -> st.SearchStrategy:
    """Arrays of ``min_dim``..``max_dim`` dims, each of size ``dims(**kwargs)`` (1..5)."""
    dims_ = st.lists(dims(**kwargs), min_size=min_dim, max_size=max_dim)
    return dims_.flatmap(lambda d: arrays(d, dtype, elements))


def tensor1d(min_len: int = 1, max_len: int = 64, dtype: Any = np.float32, elements: Any = None) -> st.SearchStrategy:
    return tensor(1, 1, dtype, elements, min_value=min_len, max_value=max_len)


def tensors(n: int | None = None, min_dim: int = 1, max_dim: int = 4, dtype: Any = np.float32, elements: Any = None,
            min_n: int | None = None, max_n: int | None = None, varying_shape: bool = False,
            **kwargs: Any) -> st.SearchStrategy:
    """Lists of ``n`` arrays of one shape. Caffe2's early-2018 spelling works too: ``min_n``/``max_n``
    (between min_n and max_n arrays, default exactly min_n) and ``varying_shape=True`` (each its own
    shape)."""
    lo = n if n is not None else (1 if min_n is None else min_n)
    hi = n if n is not None else (lo if max_n is None else max_n)
    dims_ = st.lists(dims(**kwargs), min_size=min_dim, max_size=max_dim)
    if varying_shape:
        return st.lists(dims_.flatmap(lambda d: arrays(d, dtype, elements)), min_size=lo, max_size=hi)
    return dims_.flatmap(lambda d: st.lists(arrays(d, dtype, elements), min_size=lo, max_size=hi))


def ntensors(min_n: int, max_n: int, min_dim: int = 1, max_dim: int = 4, dtype: Any = np.float32,
             elements: Any = None, **kwargs: Any) -> st.SearchStrategy:
    """Between ``min_n`` and ``max_n`` arrays of one shape."""
    dims_ = st.lists(dims(**kwargs), min_size=min_dim, max_size=max_dim)
    return dims_.flatmap(lambda d: st.lists(arrays(d, dtype, elements), min_size=min_n, max_size=max_n))


def tensors1d(n: int, min_len: int = 1, max_len: int = 64, dtype: Any = np.float32,
              elements: Any = None) -> st.SearchStrategy:
    return tensors(n, 1, 1, dtype, elements, min_value=min_len, max_value=max_len)


def segment_ids(size: int, is_sorted: bool) -> st.SearchStrategy:
    """int32 segment ids for ``size`` rows: sorted runs from 0, or any ids up to 2·size."""
    if size == 0:
        return st.just(np.empty(shape=[0], dtype=np.int32))
    if is_sorted:
        return arrays([size], dtype=np.int32, elements=st.booleans()).map(
            lambda x: np.cumsum(x, dtype=np.int32) - x[0])
    return arrays([size], dtype=np.int32, elements=st.integers(min_value=0, max_value=2 * size))


def lengths(size: int, min_segments: int | None = None, max_segments: int | None = None,
            **kwargs: Any) -> st.SearchStrategy:
    """int32 lengths (zeros allowed) that add up to ``size``."""
    min_segments = 0 if min_segments is None else min_segments
    max_segments = size if max_segments is None else max_segments
    if not 0 <= min_segments <= max_segments:
        raise ValueError(f"need 0 <= min_segments ({min_segments}) <= max_segments ({max_segments})")
    if size == 0 and max_segments == 0:
        return st.just(np.empty(shape=[0], dtype=np.int32))
    if max_segments <= 0:
        raise ValueError("size is not 0, so at least one segment is needed")
    # Borders between segments, sorted with 0 and size added: their differences are the lengths.
    return st.integers(min_value=max(min_segments - 1, 0), max_value=max_segments - 1).flatmap(
        lambda n: hypothesis.extra.numpy.arrays(np.int32, n, elements=st.integers(min_value=0, max_value=size))
    ).map(lambda x: np.diff(np.sort(np.append(x, np.array([0, size], dtype=np.int32)))).astype(np.int32))


def segmented_tensor(min_dim: int = 1, max_dim: int = 4, dtype: Any = np.float32, is_sorted: bool = True,
                     elements: Any = None, segment_generator: Callable[..., st.SearchStrategy] = segment_ids,
                     allow_empty: bool = False, **kwargs: Any) -> st.SearchStrategy:
    """(data, segments) pairs: segments describe data's first dim (ids or lengths)."""
    gen_empty = st.booleans() if allow_empty else st.just(False)
    data_dims = st.tuples(gen_empty, st.lists(dims(**kwargs), min_size=min_dim, max_size=max_dim)).map(
        lambda pair: ([0] if pair[0] else []) + pair[1])
    return data_dims.flatmap(lambda d: st.tuples(arrays(d, dtype, elements),
                                                 segment_generator(d[0], is_sorted=is_sorted)))


def lengths_tensor(min_segments: int | None = None, max_segments: int | None = None, *args: Any,
                   **kwargs: Any) -> st.SearchStrategy:
    """(data, lengths) pairs: int32 lengths that add up to data's first dim."""
    gen = functools.partial(lengths, min_segments=min_segments, max_segments=max_segments)
    return segmented_tensor(*args, segment_generator=gen, **kwargs)


def sparse_segmented_tensor(min_dim: int = 1, max_dim: int = 4, dtype: Any = np.float32, is_sorted: bool = True,
                            elements: Any = None, allow_empty: bool = False,
                            segment_generator: Callable[..., st.SearchStrategy] = segment_ids,
                            itype: Any = np.int64, **kwargs: Any) -> st.SearchStrategy:
    """(data, indices into data's rows, segments of the indices) triples."""
    gen_empty = st.booleans() if allow_empty else st.just(False)
    data_dims = st.lists(dims(**kwargs), min_size=min_dim, max_size=max_dim)
    all_dims = st.tuples(gen_empty, data_dims).flatmap(lambda pair: st.tuples(
        st.just(pair[1]), st.integers(min_value=1, max_value=pair[1][0]) if not pair[0] else st.just(0)))
    return all_dims.flatmap(lambda d: st.tuples(
        arrays(d[0], dtype, elements),
        arrays(d[1], dtype=itype, elements=st.integers(min_value=0, max_value=d[0][0] - 1)),
        segment_generator(d[1], is_sorted=is_sorted)))


def sparse_lengths_tensor(**kwargs: Any) -> st.SearchStrategy:
    return sparse_segmented_tensor(segment_generator=lengths, **kwargs)


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------
cpu_do = caffe2_pb2.DeviceOption()
cuda_do = caffe2_pb2.DeviceOption(device_type=caffe2_pb2.CUDA)
hip_do = caffe2_pb2.DeviceOption(device_type=getattr(caffe2_pb2, "HIP", 6))  # HIP postdates this caffe2.proto
gpu_do = caffe2_pb2.DeviceOption(device_type=workspace.GpuDeviceType)
# Only the CPU here: workspace.has_cuda_support / has_hip_support are False.
device_options = [cpu_do]
expanded_device_options = [cpu_do]
_device_options_no_hip = [cpu_do]


def device_checker_device_options() -> st.SearchStrategy:
    return st.just(device_options)


def gradient_checker_device_option() -> st.SearchStrategy:
    return st.sampled_from(device_options)


def _skip_without(what: str) -> Callable[[Any], Any]:
    def skip(_: Any) -> Any:
        raise unittest.SkipTest(f"this netjit build has no {what} device")
    return skip


def _no_device(what: str) -> st.SearchStrategy:
    """A strategy whose every draw skips the test: a GPU-only Caffe2 test skips on this CPU build."""
    return st.just(None).map(_skip_without(what))


gcs = dict(gc=gradient_checker_device_option(), dc=device_checker_device_options())
gcs_cpu_only = dict(gc=st.sampled_from([cpu_do]), dc=st.just([cpu_do]))
# No GPU here: these strategies skip the test that draws from them.
gcs_cuda_only = dict(gc=_no_device("CUDA"), dc=_no_device("CUDA"))
gcs_gpu_only = dict(gc=_no_device("GPU"), dc=_no_device("GPU"))
gcs_no_hip = dict(gc=st.sampled_from(_device_options_no_hip), dc=st.just(_device_options_no_hip))


@contextlib.contextmanager
def temp_workspace(name: str = "temp_ws") -> Iterator[None]:
    """Run the body in the named workspace ``name`` (emptied afterwards), then switch back."""
    name = name.decode() if isinstance(name, bytes) else name
    old = workspace.CurrentWorkspace()
    workspace.SwitchWorkspace(name, True)
    try:
        yield
    finally:
        workspace.ResetWorkspace()
        workspace.SwitchWorkspace(old)


def _feed_inputs(op: caffe2_pb2.OperatorDef, inputs: Sequence[Any], device_option: Any,
                 input_device_options: dict | None) -> None:
    if len(op.input) > len(inputs):
        raise ValueError(f"must supply an input for each input on the op: {list(op.input)} vs {len(inputs)} inputs")
    for name, value in zip(op.input, inputs):
        workspace.FeedBlob(name, value, (input_device_options or {}).get(name, device_option))


def runOpOnInput(device_option: Any, op: caffe2_pb2.OperatorDef, inputs: Sequence[Any],
                 input_device_options: dict | None = None) -> list[Any]:
    """Run ``op`` once on ``inputs`` in a temporary workspace; return every output."""
    op = copy.deepcopy(op)
    op.device_option.CopyFrom(device_option)
    with temp_workspace():
        _feed_inputs(op, inputs, device_option, input_device_options)
        workspace.RunOperatorOnce(op)
        return [workspace.FetchBlob(name) for name in op.output]


_TENSOR_TYPE = {np.dtype(np.float64): caffe2_pb2.TensorProto.DOUBLE, np.dtype(np.float32): caffe2_pb2.TensorProto.FLOAT,
                np.dtype(np.int32): caffe2_pb2.TensorProto.INT32, np.dtype(np.int64): caffe2_pb2.TensorProto.INT64}


# --------------------------------------------------------------------------------------------
# The test case
# --------------------------------------------------------------------------------------------
class HypothesisTestCase(test_util.TestCase):
    """``test_util.TestCase`` with Caffe2's op-checking assertions (see the module doc)."""

    def assertDeviceChecks(self, device_options: Sequence[Any], op: caffe2_pb2.OperatorDef, inputs: Sequence[Any],
                           outputs_to_check: Sequence[int], input_device_options: dict | None = None,
                           threshold: float = 0.01) -> None:
        dc = device_checker.DeviceChecker(threshold, device_options=device_options)
        self.assertTrue(dc.CheckSimple(op, inputs, outputs_to_check, input_device_options),
                        f"{op.type}: outputs differ between devices or executors")

    def assertGradientChecks(self, device_option: Any, op: caffe2_pb2.OperatorDef, inputs: Sequence[Any],
                             outputs_to_check: int, outputs_with_grads: Sequence[int], grad_ops: Any = None,
                             threshold: float = 0.005, stepsize: float = 0.05,
                             input_device_options: dict | None = None) -> None:
        gc = gradient_checker.GradientChecker(stepsize=stepsize, threshold=threshold, device_option=device_option,
                                              workspace_name=str(device_option) or "gradient_check",
                                              input_device_options=input_device_options)
        ok, grad, estimate = gc.CheckSimple(op, inputs, outputs_to_check, outputs_with_grads, grad_ops=grad_ops,
                                            input_device_options=input_device_options)
        self.assertEqual(np.shape(grad), np.shape(estimate))
        self.assertTrue(ok, f"Gradient check failed for input {op.input[outputs_to_check]}")

    def _assertGradReferenceChecks(self, op: caffe2_pb2.OperatorDef, inputs: Sequence[Any], ref_outputs: Sequence[Any],
                                   output_to_grad: str, grad_reference: Callable[..., Any],
                                   threshold: float = 1e-4) -> None:
        grad_blob = output_to_grad + "_grad"
        grad_ops, grad_map = core.GradientRegistry.GetBackwardPass([op], {output_to_grad: grad_blob})
        output_grad = workspace.FetchBlob(output_to_grad)
        grad_ref_outputs = grad_reference(output_grad, ref_outputs, inputs)
        workspace.FeedBlob(grad_blob, workspace.FetchBlob(output_to_grad))
        workspace.RunOperatorsOnce(grad_ops)
        self.assertEqual(len(grad_ref_outputs), len(inputs))
        for name, ref in zip(op.input, grad_ref_outputs):
            grad_names = grad_map.get(name)
            if not grad_names:
                self.assertIsNone(ref)
                continue
            if isinstance(grad_names, core.GradientSlice):
                ref_vals, ref_indices = ref
                vals = workspace.FetchBlob(str(grad_names.values))
                np.testing.assert_allclose(workspace.FetchBlob(str(grad_names.indices)), ref_indices,
                                           atol=1e-4, rtol=1e-4)
                val_name = grad_names.values
            else:
                ref_vals, val_name = ref, grad_names
                vals = workspace.FetchBlob(str(grad_names))
            np.testing.assert_allclose(vals, ref_vals, atol=threshold, rtol=threshold,
                                       err_msg=f"Gradient {val_name} (x) is not matching the reference (y)")

    def _assertInferTensorChecks(self, name: str, shapes: dict, types: dict, output: Any,
                                 ensure_output_is_inferred: bool = False) -> None:
        self.assertTrue(not ensure_output_is_inferred or name in shapes, f"Shape for {name} was not inferred")
        if name not in shapes or not isinstance(output, np.ndarray):
            return
        self.assertEqual(list(shapes[name]), list(output.shape),
                         f"Shape {name} mismatch: {shapes[name]} inferred vs. {output.shape} computed")
        if output.dtype in _TENSOR_TYPE and name in types:
            self.assertEqual(types[name], _TENSOR_TYPE[output.dtype],
                             f"Type {name} mismatch: {types[name]} inferred vs. {output.dtype} computed")

    def assertReferenceChecks(self, device_option: Any, op: caffe2_pb2.OperatorDef, inputs: Sequence[Any],
                              reference: Callable[..., Any], input_device_options: dict | None = None,
                              threshold: float = 1e-4, output_to_grad: str | None = None,
                              grad_reference: Callable[..., Any] | None = None, atol: float | None = None,
                              outputs_to_check: Sequence[int] | None = None,
                              ensure_outputs_are_inferred: bool = False) -> list[Any]:
        """Run ``op`` as a one-op net and compare its outputs with ``reference(*inputs)`` (a tuple or
        list of arrays) and with the shapes and types netjit infers for them."""
        op = copy.deepcopy(op)
        op.device_option.CopyFrom(device_option)
        with temp_workspace():
            _feed_inputs(op, inputs, device_option, input_device_options)
            net = core.Net("opnet")
            net.Proto().op.extend([op])
            try:
                shapes, types = workspace.InferShapesAndTypes([net])
                inferred = True
            except RuntimeError as err:     # as Caffe2: an op without inference still runs its check
                _LOG.warning("shape inference failed for %s: %s", op.type, err)
                inferred = False
            workspace.RunNetOnce(net)
            reference_outputs = reference(*inputs)
            if not isinstance(reference_outputs, (tuple, list)):
                raise RuntimeError("You are providing a wrong reference implementation. A proper one should "
                                   "return a tuple/list of numpy arrays.")
            if not outputs_to_check:
                self.assertEqual(len(reference_outputs), len(op.output))
                outputs_to_check = list(range(len(op.output)))
            outs = []
            for index, ref in zip(outputs_to_check, reference_outputs):
                name = op.output[index]
                output = workspace.FetchBlob(name)
                if getattr(output, "dtype", None) is not None and output.dtype.kind in "SO":
                    np.testing.assert_array_equal(output, ref)
                else:
                    np.testing.assert_allclose(output, ref, atol=threshold if atol is None else atol, rtol=threshold,
                                               err_msg=f"Output {name} is not matching the reference")
                if inferred:
                    self._assertInferTensorChecks(name, shapes, types, output,
                                                  ensure_output_is_inferred=ensure_outputs_are_inferred)
                outs.append(output)
            if grad_reference is not None:
                if output_to_grad is None:
                    raise ValueError("If grad_reference is set, output_to_grad has to be set as well")
                with core.DeviceScope(device_option):
                    self._assertGradReferenceChecks(op, inputs, reference_outputs, output_to_grad, grad_reference,
                                                    threshold=threshold)
            return outs

    def assertValidationChecks(self, device_option: Any, op: caffe2_pb2.OperatorDef, inputs: Sequence[Any],
                               validator: Callable[..., Any], input_device_options: dict | None = None,
                               as_kwargs: bool = True, init_net: Any = None) -> None:
        """Run ``op`` and call ``validator(**{blob name: value})`` (or ``validator(inputs=, outputs=)``)."""
        if as_kwargs and len(set(op.input) | set(op.output)) != len(op.input) + len(op.output):
            raise ValueError("in-place ops are not supported in as_kwargs mode")
        op = copy.deepcopy(op)
        op.device_option.CopyFrom(device_option)
        with temp_workspace():
            _feed_inputs(op, inputs, device_option, input_device_options)
            if init_net:
                workspace.RunNetOnce(init_net)
            workspace.RunOperatorOnce(op)
            outputs = [workspace.FetchBlob(n) for n in op.output]
            if as_kwargs:
                validator(**dict(zip(list(op.input) + list(op.output), list(inputs) + outputs)))
            else:
                validator(inputs=inputs, outputs=outputs)

    def assertRunOpRaises(self, device_option: Any, op: caffe2_pb2.OperatorDef, inputs: Sequence[Any],
                          input_device_options: dict | None = None, exception: Any = (Exception,),
                          regexp: str | None = None) -> None:
        op = copy.deepcopy(op)
        op.device_option.CopyFrom(device_option)
        with temp_workspace():
            _feed_inputs(op, inputs, device_option, input_device_options)
            if regexp is None:
                self.assertRaises(exception, workspace.RunOperatorOnce, op)
            else:
                self.assertRaisesRegex(exception, regexp, workspace.RunOperatorOnce, op)
