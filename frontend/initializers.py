"""Parameter initializers and tags used by ModelHelper and brew (Caffe2's ``modeling`` package).

An initializer turns a parameter name and shape into an op in the init net::

    Initializer("GaussianFill", std=0.01)      # GaussianFill([], "fc_w", shape=[...], std=0.01)
    ExternalInitializer()                      # no op: the blob is fed or loaded

brew helpers also take ``weight_init=("XavierFill", {})`` style tuples; see update_initializer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from netjit.core import BlobReference, ScopedBlobReference


class ParameterTags:
    BIAS = "BIAS"
    WEIGHT = "WEIGHT"
    COMPUTED_PARAM = "COMPUTED_PARAM"


@dataclass
class ParameterInfo:
    """What a model knows about one parameter blob."""
    param_id: int | None
    param: BlobReference
    shape: Sequence[int] | None = None
    grad: Any = None

    @property
    def blob(self) -> BlobReference:
        return self.param

    @property
    def name(self) -> str:
        return str(self.param)


class Initializer:
    """Emit ``<operator_name>([], param, shape=shape, **kwargs)`` into the init net."""

    def __init__(self, operator_name: str | None = None, **kwargs: Any):
        self.operator_name = operator_name
        self.operator_kwargs = kwargs

    def update(self, operator_name: str, kwargs: dict) -> None:
        if self.operator_name is not None:
            raise ValueError(f"this initializer already uses {self.operator_name!r}; it cannot be changed "
                             f"to {operator_name!r}")
        self.operator_name = operator_name
        self.operator_kwargs = kwargs

    def create_param(self, param_name: Any, init_net: Any, shape: Sequence[int]) -> ParameterInfo:
        param = getattr(init_net, self.operator_name)([], param_name, shape=shape, **self.operator_kwargs)
        return ParameterInfo(param_id=None, param=param, shape=shape)

    def __repr__(self) -> str:
        return f"Initializer({self.operator_name!r}, **{self.operator_kwargs!r})"


class ExternalInitializer:
    """The parameter comes from outside (fed, or loaded from a DB): no init op."""

    def create_param(self, param_name: Any, init_net: Any, shape: Sequence[int]) -> ParameterInfo:
        if isinstance(param_name, BlobReference):
            param = BlobReference(str(param_name), init_net)
        elif isinstance(param_name, str):
            param = ScopedBlobReference(param_name, init_net)
        else:
            raise TypeError(f"a parameter name must be a string or BlobReference, got {param_name!r}")
        return ParameterInfo(param_id=None, param=param, shape=shape)


def update_initializer(initializer: Any, op_and_kwargs: tuple | None,
                       default_op_and_kwargs: tuple) -> Any:
    """The initializer a helper uses: an Initializer class (or instance) combined with the
    ``(op_name, kwargs)`` tuple given, or the helper's default tuple.

    >>> update_initializer(None, None, ("XavierFill", {})).operator_name
    'XavierFill'
    """
    op_name, kwargs = op_and_kwargs or default_op_and_kwargs
    if initializer is None:
        return Initializer(op_name, **kwargs)
    if isinstance(initializer, type):
        return initializer(op_name, **kwargs)
    # An instance: keep its own op unless it left the op open.
    if getattr(initializer, "operator_name", "set") is None:
        initializer.update(op_name, dict(kwargs))
    return initializer
