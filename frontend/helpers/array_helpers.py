"""``caffe2.python.helpers.array_helpers``: concat, depth_concat (see ``netjit.brew_helpers``)."""
from netjit.brew_helpers import concat, depth_concat

__all__ = ['concat', 'depth_concat']
