"""``caffe2.python.helpers.arg_scope``: ``brew.arg_scope``."""
from netjit.brew import arg_scope

__all__ = ["arg_scope"]
