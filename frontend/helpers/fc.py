"""``caffe2.python.helpers.fc``: fc (see ``netjit.brew_helpers``)."""
from netjit.brew_helpers import fc

__all__ = ['fc']
