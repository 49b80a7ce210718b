"""``caffe2.python.helpers.dropout``: dropout (see ``netjit.brew_helpers``)."""
from netjit.brew_helpers import dropout

__all__ = ['dropout']
