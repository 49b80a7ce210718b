"""The ``Python`` op: run a Python function as a net op (caffe2-facts §2.6), and its gradient.

Functions are registered in this process under a token (``<funcname>``, then ``<funcname>:1``,
``<funcname>:2`` ... for later functions with the same name); the op stores the token as an
argument. A ``(builder, args, kwargs)`` tuple may be given instead of a function: it is pickled into
the op (``pickled_builder``) and called when the op is first run, so such nets survive a save/load.

The function is called as ``f(inputs, outputs)`` (or ``f(inputs, outputs, workspace)`` with
``pass_workspace``), each a list of :class:`TensorCPU` handles on the op's blobs::

    def double(inputs, outputs):
        outputs[0].feed(2 * inputs[0].data)

    net.Python(double)(["x"], ["y"])      # core.Net.Python calls python_op_builder below

``PythonGradient`` runs ``grad_f`` on inputs [forward inputs, forward outputs, output gradients]
and outputs [input gradients], or the subsets chosen by ``grad_output_indices`` and
``grad_input_indices``.

Consent: a model file is data. A pickled builder that this process did not make itself (one read
from a file) is code, so it is unpickled only when the user said so: ``allow_pickled_python_ops(True)``
(``workspace.AllowPickledPythonOps``), ``NETJIT_ALLOW_PICKLED_CODE=1``, a workspace marked by
``allow_pickled_code_in`` (``Predictor(..., allow_pickled_code=True)``). :func:`check_consent` runs
when a net is constructed; ``_resolve`` checks again before anything is unpickled, so no path that
skips construction (``netjit.compile``, plans) can run such a payload without consent either.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from netjit.compiler.ops.common import DTYPE_OF
from netjit.compiler.ops.gradients import GradientContext
from netjit.compiler.ops.registry import HOST, INF, arg, defop
from netjit.runtime.errors import OpError, PickledCodeError

_GRADIENT_SUFFIX = "_gradient"


@dataclass(frozen=True)
class PythonFunc:
    func: Callable[..., Any]
    pass_workspace: bool


# token -> function; a gradient is stored under token + "_gradient".
_FUNCS: dict[str, PythonFunc] = {}

# Digests of the pickles python_op_builder made in this process: the script itself asked for
# them, so they run without further consent (a net built, saved and reloaded by the same script).
_TRUSTED: set[bytes] = set()
_PICKLED_ARGS = ("pickled_builder", "pickled_grad_builder")
_ENV_SWITCH = "NETJIT_ALLOW_PICKLED_CODE"
_allowed: bool | None = None      # None: follow the environment variable


def allow_pickled_python_ops(allow: bool = True) -> bool:
    """Let (or stop letting) Python ops unpickle builders read from model files, process-wide;
    returns the previous setting. Only do this for files you trust: a pickle can run any code.

    >>> previous = allow_pickled_python_ops(False); _ = allow_pickled_python_ops(previous)
    """
    global _allowed
    previous = pickled_code_allowed()
    _allowed = bool(allow)
    return previous


def pickled_code_allowed(ws: Any = None) -> bool:
    """True when the process-wide switch (or NETJIT_ALLOW_PICKLED_CODE=1), or ``ws``, allows it."""
    if ws is not None and any(getattr(w, "allow_pickled_code", False) for w in _lineage(ws)):
        return True
    if _allowed is not None:
        return _allowed
    return os.environ.get(_ENV_SWITCH, "").strip().lower() in ("1", "true", "yes", "on")


def allow_pickled_code_in(ws: Any) -> None:
    """Mark one workspace (a Predictor's private one) as allowed to run pickled Python ops."""
    ws.__dict__["allow_pickled_code"] = True


def _lineage(ws: Any) -> list[Any]:
    out = []
    while ws is not None and len(out) < 64:
        out.append(ws)
        ws = getattr(ws, "parent", None)
    return out


def _digest(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


def _arg_payload(op: Any, name: str) -> bytes:
    for a in op.arg:
        if a.name == name:
            return bytes(a.s)
    return b""


def _token(op: Any) -> str:
    raw = _arg_payload(op, "token")
    return raw.decode("utf-8", "replace")


def _opt_in_hint() -> str:
    return (f"a pickle can run any code, so netjit does not unpickle one from a model file unless you "
            f"opt in: workspace.AllowPickledPythonOps(True), workspace.Predictor(..., "
            f"allow_pickled_code=True) or {_ENV_SWITCH}=1 (only for files you trust)")


def check_consent(net: Any, ws: Any = None, allow: bool = False) -> bool:
    """Refuse a NetDef holding Python ops whose code would come from the file itself (a pickled
    builder this process did not make) unless the user opted in; refuse ops naming a token no
    function is registered under. Raises :class:`PickledCodeError` / :class:`OpError` naming the
    net, op index and type. Nets nested in arguments (If/While bodies, step nets) are checked too.
    Reads the arguments only: nothing is unpickled here. Returns whether the net holds Python ops
    (whose verdict depends on what is registered and allowed at the time)."""
    found = False
    for index, op in enumerate(net.op):
        for argument in op.arg:
            for sub in ([argument.n] if argument.HasField("n") else []) + list(argument.nets):
                found = check_consent(sub, ws, allow) or found
        if op.type not in ("Python", "PythonGradient"):
            continue
        found = True
        for name in _PICKLED_ARGS:
            payload = _arg_payload(op, name)
            if payload and _digest(payload) not in _TRUSTED and not (allow or pickled_code_allowed(ws)):
                blob = op.output[0] if len(op.output) else (op.input[0] if len(op.input) else None)
                raise PickledCodeError(f"argument {name!r} holds a pickled Python builder ({len(payload)} "
                                       f"bytes) that this process did not create; {_opt_in_hint()}",
                                       net=net.name, index=index, op_type=op.type, blob=blob)
        if not any(_arg_payload(op, n) for n in _PICKLED_ARGS):
            token = _token(op)
            key = token + _GRADIENT_SUFFIX if op.type == "PythonGradient" else token
            if key not in _FUNCS:
                what = "gradient function" if op.type == "PythonGradient" else "function"
                raise OpError(f"no Python {what} is registered under token {token!r} in this process; a net "
                              f"saved with Python ops needs the same functions registered (net.Python(f)) "
                              f"before it is created", net=net.name, index=index, op_type=op.type)
    return found


def _func_name(f: Any) -> str:
    return getattr(f, "__name__", None) or type(f).__name__


def register_python_function(f: Callable[..., Any], grad_f: Callable[..., Any] | None = None,
                             python_func_type: Any = None, pass_workspace: bool = False,
                             name: str = "") -> str:
    """Register ``f`` (and its gradient ``grad_f``) and return the op's ``token``.

    ``python_func_type``: a class built as ``python_func_type(f)`` whose ``forward`` and ``backward``
    methods become f and grad_f. Tuples ``(builder, args, kwargs)`` are built right away.

    >>> def my_func(inputs, outputs): pass
    >>> register_python_function(my_func).startswith("my_func")
    True
    """
    if python_func_type is not None:
        instance = python_func_type(f)
        f, grad_f = instance.forward, instance.backward
    else:
        if isinstance(f, tuple):
            f = _build(f)
        if isinstance(grad_f, tuple):
            grad_f = _build(grad_f)
    if f is None:
        raise ValueError("the Python op needs a function")
    base = (name + ":" if name else "") + _func_name(f)
    token, k = base, 1
    while token in _FUNCS:
        token = f"{base}:{k}"
        k += 1
    _FUNCS[token] = PythonFunc(f, bool(pass_workspace))
    if grad_f is not None:
        # Gradient functions never see the workspace.
        _FUNCS[token + _GRADIENT_SUFFIX] = PythonFunc(grad_f, False)
    return token


def registered_function(token: str, gradient: bool = False) -> PythonFunc:
    key = token + _GRADIENT_SUFFIX if gradient else token
    try:
        return _FUNCS[key]
    except KeyError:
        what = "gradient function" if gradient else "function"
        raise KeyError(f"no Python {what} is registered under token {token!r} in this process; a net "
                       f"saved with Python ops needs the same functions registered (net.Python(f)) before "
                       f"it runs") from None


def _build(builder: tuple) -> Callable[..., Any]:
    if len(builder) != 3:
        raise ValueError("a Python op builder must be a (function, args, kwargs) tuple")
    func, args, kwargs = builder
    return func(*args, **kwargs)


def _pickled(builder: Any) -> bytes:
    if not isinstance(builder, tuple):
        return b""
    if len(builder) != 3:
        raise ValueError("a Python op builder must be a (function, args, kwargs) tuple")
    func, args, kwargs = builder
    payload = pickle.dumps((func, tuple(args), dict(kwargs)))
    _TRUSTED.add(_digest(payload))
    return payload


def python_op_builder(net: Any, f: Any, grad_f: Any = None, python_func_type: Any = None,
                      pass_workspace: bool = False, grad_output_indices: Sequence[int] | None = None,
                      grad_input_indices: Sequence[int] | None = None) -> Callable[..., Any]:
    """What ``core.Net.Python(...)`` returns: ``builder(inputs, outputs, **kwargs)`` appends a
    ``Python`` op to ``net`` (through the net's usual op constructor) and returns its outputs."""
    f_builder = _pickled(f)
    grad_builder = _pickled(grad_f)
    if grad_f is not None and bool(f_builder) != bool(grad_builder):
        raise ValueError("pass (function, args, kwargs) tuples for both f and grad_f, or for neither")
    core_kwargs: dict[str, Any] = {}
    if f_builder:
        core_kwargs["pickled_builder"] = f_builder
        core_kwargs["pickled_grad_builder"] = grad_builder
        core_kwargs["pass_workspace"] = bool(pass_workspace)
    else:
        core_kwargs["token"] = register_python_function(f, grad_f, python_func_type,
                                                        pass_workspace=pass_workspace)
    indices = {"grad_output_indices": list(grad_output_indices or []),
               "grad_input_indices": list(grad_input_indices or [])}

    def build(*args: Any, **kwargs: Any) -> Any:
        merged = dict(indices)
        merged.update(kwargs)
        merged.update(core_kwargs)
        return net._CreateAndAddToSelf("Python", *args, **merged)
    return build


# --------------------------------------------------------------------------------------------
# What the function sees
# --------------------------------------------------------------------------------------------
class _Stage:
    """Private, writable copies of the blobs one call touches. Handles on the same blob name share
    one array (in-place ops); the op writes the arrays back only after the function returns, so a
    failing function leaves the workspace as it was."""

    def __init__(self, ws: Any):
        self.ws = ws
        self.arrays: dict[str, Any] = {}

    def current(self, name: str) -> Any:
        if name in self.arrays:
            return self.arrays[name]
        value = self.ws.get(name) if self.ws.has(name) else None
        if isinstance(value, np.ndarray):
            value = np.array(value, copy=True)
        self.arrays[name] = value
        return value

    def set(self, name: str, value: Any) -> None:
        self.arrays[name] = value


class TensorCPU:
    """A handle on one blob's tensor inside a Python op; writes land in the workspace.

    ``.data`` is a writable numpy array (float32 when the tensor was reshaped but never typed),
    ``.shape`` its dims, ``.reshape(dims)`` resizes (keeping the data when the size is unchanged),
    ``.init(dims, caffe2_type)`` allocates a typed tensor, ``.feed(a)`` stores a copy of ``a``,
    ``.fetch()`` returns a copy.
    """

    def __init__(self, stage: _Stage, name: str):
        self._stage = stage
        self._name = name

    def __repr__(self) -> str:
        return f"TensorCPU({self._name!r})"

    def _array(self) -> np.ndarray:
        value = self._stage.current(self._name)
        if value is None:
            raise ValueError(f"blob {self._name!r} holds no tensor yet: reshape(), init() or feed() it "
                             f"before reading .data")
        if not isinstance(value, np.ndarray):
            raise TypeError(f"blob {self._name!r} holds a {type(value).__name__}, not a tensor")
        return value

    @property
    def data(self) -> np.ndarray:
        return self._array()

    @property
    def shape(self) -> tuple[int, ...]:
        value = self._stage.current(self._name)
        return tuple(value.shape) if isinstance(value, np.ndarray) else ()

    _shape = shape

    def reshape(self, dims: Sequence[int]) -> None:
        dims = tuple(int(d) for d in dims)
        value = self._stage.current(self._name)
        if isinstance(value, np.ndarray):
            if value.size == int(np.prod(dims, dtype=np.int64)):
                self._stage.set(self._name, value.reshape(dims))
            else:
                self._stage.set(self._name, np.zeros(dims, value.dtype))
        else:
            self._stage.set(self._name, np.zeros(dims, np.float32))

    _reshape = reshape

    def init(self, dims: Sequence[int], caffe_type: int) -> None:
        if caffe_type not in DTYPE_OF:
            raise ValueError(f"unsupported Caffe2 data type {caffe_type}")
        self._stage.set(self._name, np.zeros(tuple(int(d) for d in dims), DTYPE_OF[caffe_type]))

    def feed(self, value: Any) -> bool:
        array = np.asarray(value)
        if array.dtype.kind in "SU":
            array = np.array([v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in array.flat],
                             dtype=object).reshape(array.shape)
        self._stage.set(self._name, np.array(array, copy=True, order="C"))
        return True

    def fetch(self) -> np.ndarray:
        return np.array(self._array(), copy=True)


class BlobView:
    """``workspace.blobs[name]`` inside a Python op: fetch or feed one blob directly."""

    def __init__(self, ws: Any, name: str):
        self._ws, self._name = ws, name

    def fetch(self) -> Any:
        value = self._ws.get(self._name)
        return np.array(value, copy=True) if isinstance(value, np.ndarray) else value

    def feed(self, value: Any) -> bool:
        self._ws.feed(self._name, np.array(value, copy=True) if isinstance(value, np.ndarray) else value)
        return True

    def tensor(self) -> TensorCPU:
        return TensorCPU(_Stage(self._ws), self._name)


class WorkspaceView:
    """The ``workspace`` argument of a ``pass_workspace`` function (Caffe2 passed its C.Workspace)."""

    def __init__(self, ws: Any):
        self._ws = ws

    @property
    def name(self) -> str:
        return self._ws.name

    @property
    def blobs(self) -> dict[str, BlobView]:
        return {n: BlobView(self._ws, n) for n in self._ws.names()}

    def has_blob(self, name: str) -> bool:
        return self._ws.has(str(name))

    def create_blob(self, name: str) -> BlobView:
        self._ws.create_blob(str(name))
        return BlobView(self._ws, str(name))

    def fetch_blob(self, name: str) -> Any:
        return BlobView(self._ws, str(name)).fetch()

    def feed_blob(self, name: str, value: Any) -> bool:
        return BlobView(self._ws, str(name)).feed(value)


# The front end may install its own workspace object (e.g. its C.Workspace); default: the view above.
workspace_view_factory: Callable[[Any], Any] = WorkspaceView


def _resolve(ctx: Any, gradient: bool) -> PythonFunc:
    cached = ctx.state.get("python_func")
    if cached is not None:
        return cached
    pickled = ctx.args.get("pickled_grad_builder" if gradient else "pickled_builder") or b""
    if pickled:
        if _digest(bytes(pickled)) not in _TRUSTED and not pickled_code_allowed(ctx.ws):
            # The last line: also nets that never went through a construction check.
            raise PickledCodeError(f"refusing to unpickle a Python builder this process did not create; "
                                   f"{_opt_in_hint()}", net=ctx.net_name, index=ctx.index,
                                   op_type=ctx.op.type)
        func = _build(pickle.loads(pickled))
        resolved = PythonFunc(func, bool(ctx.args.get("pass_workspace")))
    else:
        token = ctx.args.get("token") or ""
        resolved = registered_function(token, gradient)
    ctx.state["python_func"] = resolved
    return resolved


def _run(ctx: Any, gradient: bool) -> list[Any]:
    func = _resolve(ctx, gradient)
    stage = _Stage(ctx.ws)
    inputs = [TensorCPU(stage, n) for n in ctx.op.input]
    outputs = [TensorCPU(stage, n) for n in ctx.op.output]
    originals = {n: ctx.ws.get(n) if ctx.ws.has(n) else None for n in ctx.op.input}
    if func.pass_workspace:
        func.func(inputs, outputs, workspace_view_factory(ctx.ws))
    else:
        func.func(inputs, outputs)
    # Inputs the function changed in place (and that are not outputs) are written back directly.
    out_names = set(ctx.op.output)
    for name in dict.fromkeys(ctx.op.input):
        if name in out_names or name not in stage.arrays:
            continue
        new, old = stage.arrays[name], originals[name]
        changed = not (isinstance(new, np.ndarray) and isinstance(old, np.ndarray) and new.shape == old.shape
                       and new.dtype == old.dtype and np.array_equal(new, old, equal_nan=new.dtype.kind in "fc"))
        if changed and new is not None:
            ctx.ws.feed(name, new)
    return [stage.arrays.get(n) for n in ctx.op.output]


_PY_ARGS = [arg("token", "str", ""), arg("pickled_builder", "any", b""), arg("pickled_grad_builder", "any", b""),
            arg("pass_workspace", "bool", False), arg("grad_output_indices", "ints", []),
            arg("grad_input_indices", "ints", [])]


def _python_gradient(g: GradientContext) -> tuple[list, list]:
    """PythonGradient [inputs, outputs, output grads] -> [input grads] (subsets by the index args)."""
    op = g.op
    go_indices = list(g.args.grad_output_indices) or list(range(len(op.output)))
    gi_indices = list(g.args.grad_input_indices) or list(range(len(op.input)))
    grad_inputs = list(op.input) + list(op.output) + [g.GO(i) for i in go_indices]
    g_input: list[str | None] = [None] * len(op.input)
    grad_outputs = []
    for i in gi_indices:
        g_input[i] = g.GI(i)
        grad_outputs.append(g_input[i])
    return [g.make("PythonGradient", grad_inputs, grad_outputs, name="")], g_input


@defop("Python", inputs=(0, INF), outputs=(0, INF), args=_PY_ARGS, inplace="all", category=HOST,
       gradient=_python_gradient)
def python(ctx, *inputs):
    """Runs the registered Python function on the op's blobs."""
    return _run(ctx, gradient=False)


@defop("PythonGradient", inputs=(0, INF), outputs=(0, INF), args=_PY_ARGS, inplace="all", category=HOST)
def python_gradient(ctx, *inputs):
    """Runs the registered gradient function: inputs [X..., Y..., dY...], outputs [dX...]."""
    return _run(ctx, gradient=True)
