"""``caffe2.python.helpers.train``: iter, accuracy, add_weight_decay (see ``netjit.brew_helpers``)."""
from netjit.brew_helpers import iter, accuracy, add_weight_decay

__all__ = ['iter', 'accuracy', 'add_weight_decay']
