"""``caffe2.python.helpers.control_ops``: cond, loop (see ``netjit.brew_helpers``)."""
from netjit.brew_helpers import cond, loop

__all__ = ['cond', 'loop']
