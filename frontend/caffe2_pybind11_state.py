"""``caffe2.python.caffe2_pybind11_state``: the name of Caffe2's compiled CPU extension
module (scripts import it directly); here it is
:mod:`netjit.c_extension`, the same module object."""
import sys

from netjit import c_extension

sys.modules[__name__] = c_extension
