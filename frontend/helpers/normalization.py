"""``caffe2.python.helpers.normalization``: lrn, softmax, spatial_bn (see ``netjit.brew_helpers``)."""
from netjit.brew_helpers import lrn, softmax, spatial_bn

__all__ = ['lrn', 'softmax', 'spatial_bn']
