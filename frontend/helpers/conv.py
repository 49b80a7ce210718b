"""``caffe2.python.helpers.conv``: conv, conv_nd, group_conv, conv_transpose (see ``netjit.brew_helpers``)."""
from netjit.brew_helpers import conv, conv_nd, group_conv, conv_transpose

__all__ = ['conv', 'conv_nd', 'group_conv', 'conv_transpose']
