"""Code generation: the numba CPU and CUDA backends and the library kernels they call."""
from netjit.compiler.codegen import numba_start as _numba_start

# Before anything here loads numba's CPU target (numba_start.py says why).
_numba_start.install()
