"""``caffe2.python.helpers.algebra``: transpose, sum (see ``netjit.brew_helpers``)."""
from netjit.brew_helpers import transpose, sum

__all__ = ['transpose', 'sum']
