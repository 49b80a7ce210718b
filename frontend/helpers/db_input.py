"""``caffe2.python.helpers.db_input``: db_input (see ``netjit.brew_helpers``)."""
from netjit.brew_helpers import db_input

__all__ = ['db_input']
