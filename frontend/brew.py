"""``caffe2.python.brew``: layer helpers that add parameters and ops to a ModelHelper.

Every helper is called as ``brew.<name>(model, ...)``. Its keyword arguments are merged, in this
order, from a copy of ``model.arg_scope``, the active ``brew.arg_scope`` for that helper, and the
explicit keywords (caffe2-facts §2.5). Helpers without ``**kwargs`` only take the model's
arg_scope entries they name.

>>> from netjit.model_helper import ModelHelper
>>> model = ModelHelper(name="demo")
>>> with arg_scope([fc], axis=1):
...     y = fc(model, "x", "y", dim_in=3, dim_out=2)
>>> [a.name for a in model.net.Proto().op[0].arg]
['order', 'use_cudnn', 'cudnn_exhaustive_search', 'axis']
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import threading
from typing import Any, Callable, Iterator

from netjit import brew_helpers

_local = threading.local()
_REGISTRY: dict[str, Callable[..., Any]] = dict(brew_helpers.HELPERS)
_WRAPPERS: dict[str, Callable[..., Any]] = {}


def get_current_scope() -> dict[str, dict[str, Any]]:
    """{helper name: default kwargs} of the active ``arg_scope`` blocks."""
    if not hasattr(_local, "scope"):
        _local.scope = {}
    return _local.scope


@contextlib.contextmanager
def arg_scope(helpers: Any, **kwargs: Any) -> Iterator[None]:
    """Default keyword arguments for the given helpers (one or a list) inside the block.

    >>> from netjit.model_helper import ModelHelper
    >>> m = ModelHelper()
    >>> with arg_scope(relu, order="NHWC"):
    ...     r = relu(m, "x", "y")
    """
    if not isinstance(helpers, list):
        helpers = [helpers]
    old = copy.deepcopy(get_current_scope())
    scope = get_current_scope()
    for helper in helpers:
        if not callable(helper):
            raise TypeError(f"arg_scope takes helper functions, got {helper!r}")
        scope.setdefault(helper.__name__, {}).update(kwargs)
    try:
        yield
    finally:
        _local.scope = old


def _takes_var_kwargs(func: Callable[..., Any]) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(func).parameters.values())


def _named_params(func: Callable[..., Any]) -> set[str]:
    return {name for name, p in inspect.signature(func).parameters.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def _wrap(name: str) -> Callable[..., Any]:
    func = _REGISTRY[name]
    var_kwargs = _takes_var_kwargs(func)
    named = _named_params(func)

    def helper(*args: Any, **kwargs: Any) -> Any:
        from netjit.model_helper import ModelHelper
        if args and isinstance(args[0], ModelHelper):
            model = args[0]
        elif "model" in kwargs:
            model = kwargs["model"]
        else:
            raise RuntimeError("The first input of helper function should be model. Or you can provide it "
                               "in kwargs as model=<your_model>.")
        merged = copy.deepcopy(model.arg_scope)
        if not var_kwargs:
            merged = {k: v for k, v in merged.items() if k in named}
        merged.update(get_current_scope().get(name, {}))
        merged.update(kwargs)
        return func(*args, **merged)

    helper.__name__ = name
    helper.__qualname__ = name
    helper.__doc__ = func.__doc__
    helper.__wrapped__ = func  # type: ignore[attr-defined]
    return helper


def Register(helper: Callable[..., Any]) -> None:
    """Add a user helper ``helper(model, ...)``, then callable as ``brew.<helper.__name__>``."""
    name = helper.__name__
    if name in _REGISTRY or name == "arg_scope":
        raise AttributeError(f"Helper {name} already exists. Please change your helper name.")
    _REGISTRY[name] = helper
    _WRAPPERS[name] = _wrap(name)


def has_helper(helper_or_name: Any) -> bool:
    name = helper_or_name if isinstance(helper_or_name, str) else helper_or_name.__name__
    return name in _REGISTRY or name == "arg_scope"


for _name in _REGISTRY:
    _WRAPPERS[_name] = _wrap(_name)

fc = _WRAPPERS["fc"]
relu = _WRAPPERS["relu"]
tanh = _WRAPPERS["tanh"]
sigmoid = _WRAPPERS["sigmoid"]
softmax = _WRAPPERS["softmax"]
prelu = _WRAPPERS["prelu"]
dropout = _WRAPPERS["dropout"]
conv = _WRAPPERS["conv"]
conv_nd = _WRAPPERS["conv_nd"]
group_conv = _WRAPPERS["group_conv"]
conv_transpose = _WRAPPERS["conv_transpose"]
max_pool = _WRAPPERS["max_pool"]
average_pool = _WRAPPERS["average_pool"]
spatial_bn = _WRAPPERS["spatial_bn"]
lrn = _WRAPPERS["lrn"]
concat = _WRAPPERS["concat"]
depth_concat = _WRAPPERS["depth_concat"]
sum = _WRAPPERS["sum"]  # noqa: A001 - Caffe2's name
transpose = _WRAPPERS["transpose"]
iter = _WRAPPERS["iter"]  # noqa: A001 - Caffe2's name
accuracy = _WRAPPERS["accuracy"]
add_weight_decay = _WRAPPERS["add_weight_decay"]
db_input = _WRAPPERS["db_input"]
cond = _WRAPPERS["cond"]
loop = _WRAPPERS["loop"]


def __getattr__(name: str) -> Callable[..., Any]:
    # Helpers added later with Register().
    try:
        return _WRAPPERS[name]
    except KeyError:
        raise AttributeError(f"Helper function {name} not registered.") from None
