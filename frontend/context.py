"""``caffe2.python.context``: classes whose instances are "current" inside a ``with`` block.

A subclass of :class:`Managed` keeps one stack of active instances per thread; ``Cls.current()``
is the innermost one (NetBuilder uses this to know which builder ``ops.X`` adds to).

>>> class Scope(Managed):
...     pass
>>> with Scope() as s:
...     Scope.current() is s
True
>>> Scope.current(required=False) is None
True
"""
from __future__ import annotations

import threading
from typing import Any

_local = threading.local()


def _stack(cls: type) -> list:
    stacks = getattr(_local, "stacks", None)
    if stacks is None:
        stacks = _local.stacks = {}
    return stacks.setdefault(cls._context_key(), [])


class Managed:
    """Base of context-managed classes: ``with obj:`` makes ``type(obj).current()`` return obj."""

    @classmethod
    def _context_key(cls) -> type:
        # Subclasses of a managed class share their root's stack (a _Loop is a NetBuilder).
        root = cls
        for base in cls.__mro__:
            if base is Managed:
                break
            if isinstance(base, type) and issubclass(base, Managed) and base is not Managed:
                root = base
        return root

    @classmethod
    def current(cls, value: Any = None, required: bool = True) -> Any:
        """``value`` if given, else the innermost active instance; None or an error when there is none."""
        if value is not None:
            return value
        stack = _stack(cls)
        if not stack:
            if required:
                raise AssertionError(f"no active {cls._context_key().__name__}: use it inside a `with` block")
            return None
        return stack[-1]

    def __enter__(self) -> Any:
        _stack(type(self)).append(self)
        return self

    def __exit__(self, etype: Any = None, *args: Any) -> None:
        stack = _stack(type(self))
        if self not in stack:
            raise AssertionError(f"{type(self).__name__} context exited out of order")
        if stack[-1] is not self and etype is None:
            raise AssertionError(f"{type(self).__name__} context exited out of order")
        # An exception in an inner block's exit may have left that block on the stack: drop it too.
        while stack.pop() is not self:
            pass


class DefaultManaged(Managed):
    """A Managed class with an implicit default instance when none is active."""

    @classmethod
    def current(cls, value: Any = None, required: bool = True) -> Any:
        found = super().current(value, required=False)
        if found is not None:
            return found
        default = cls.__dict__.get("_default_instance")
        if default is None:
            default = cls()
            setattr(cls, "_default_instance", default)
        return default


def define_context(allow_default: bool = False) -> Any:
    """Class decorator of Caffe2's older API: make ``cls`` context-managed (``cls.current()``); the
    class's own ``__enter__``/``__exit__``, if any, run inside the push and before the pop.

    >>> @define_context()
    ... class Group:
    ...     pass
    >>> with Group() as g:
    ...     Group.current() is g
    True
    """
    def wrap(cls: type) -> type:
        base = DefaultManaged if allow_default else Managed
        own_enter = cls.__dict__.get("__enter__")
        own_exit = cls.__dict__.get("__exit__")

        def __enter__(self: Any) -> Any:
            Managed.__enter__(self)
            return own_enter(self) if own_enter is not None else self

        def __exit__(self: Any, *args: Any) -> Any:
            try:
                return own_exit(self, *args) if own_exit is not None else None
            finally:
                Managed.__exit__(self, *args)

        return type(cls.__name__, (cls, base), {"__module__": cls.__module__, "__doc__": cls.__doc__,
                                                 "__qualname__": cls.__qualname__,
                                                 "__enter__": __enter__, "__exit__": __exit__})
    return wrap
