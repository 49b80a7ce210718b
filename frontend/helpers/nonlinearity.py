"""``caffe2.python.helpers.nonlinearity``: prelu, relu, tanh, sigmoid (see ``netjit.brew_helpers``)."""
from netjit.brew_helpers import prelu, relu, tanh, sigmoid

__all__ = ['prelu', 'relu', 'tanh', 'sigmoid']
