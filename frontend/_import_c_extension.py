"""``caffe2.python._import_c_extension``: the name Caffe2's Python modules imported their C
extension by (``import caffe2.python._import_c_extension as C``); here it is
:mod:`netjit.c_extension`, the same module object."""
import sys

from netjit import c_extension

sys.modules[__name__] = c_extension
