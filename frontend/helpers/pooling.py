"""``caffe2.python.helpers.pooling``: max_pool, average_pool (see ``netjit.brew_helpers``)."""
from netjit.brew_helpers import max_pool, average_pool

__all__ = ['max_pool', 'average_pool']
