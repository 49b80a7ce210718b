"""Target CPUs of a bundle: LLVM's CPU name and features, and the /proc/cpuinfo flags they need.

``native`` is the build machine's CPU (fastest, not portable); ``x86-64-v3`` (AVX2, FMA) and
``x86-64-v4`` (AVX-512) are the generic levels most x86 servers of the last decade meet. The
manifest lists the needed features under their /proc/cpuinfo names, which is what the loader reads.

>>> required_flags("x86-64-v3")[:4]
['abm', 'avx', 'avx2', 'bmi1']
"""
from __future__ import annotations

TARGETS = ("native", "x86-64-v3", "x86-64-v4")

# LLVM feature -> /proc/cpuinfo flag, for the features generated code can use.
_CPUINFO = {
    "sse3": "pni", "ssse3": "ssse3", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "sse4a": "sse4a",
    "popcnt": "popcnt", "cx16": "cx16", "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c",
    "bmi": "bmi1", "bmi2": "bmi2", "lzcnt": "abm", "movbe": "movbe", "xsave": "xsave",
    "avx512f": "avx512f", "avx512dq": "avx512dq", "avx512cd": "avx512cd", "avx512bw": "avx512bw",
    "avx512vl": "avx512vl", "avx512ifma": "avx512ifma", "avx512vbmi": "avx512vbmi",
    "avx512vbmi2": "avx512_vbmi2", "avx512vnni": "avx512_vnni", "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq", "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16",
    "gfni": "gfni", "vaes": "vaes", "vpclmulqdq": "vpclmulqdq", "aes": "aes", "pclmul": "pclmulqdq",
    "sha": "sha_ni", "adx": "adx",
}
# The x86-64 micro-architecture levels (psABI), as LLVM features.
_V2 = ["sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "cx16"]
_V3 = _V2 + ["avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"]
_V4 = _V3 + ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]
_LEVELS = {"x86-64-v3": _V3, "x86-64-v4": _V4}


def llvm_target(target: str) -> tuple[str, str]:
    """(cpu name, feature string) to give LLVM (and numba: NUMBA_CPU_NAME / NUMBA_CPU_FEATURES)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    if target == "native":
        import llvmlite.binding as llvm
        return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
    return target, ""


def llvm_features(target: str) -> list[str]:
    """The LLVM features code for ``target`` may use."""
    if target == "native":
        import llvmlite.binding as llvm
        return sorted(k for k, on in llvm.get_host_cpu_features().items() if on)
    return list(_LEVELS[target])


def required_flags(target: str) -> list[str]:
    """The /proc/cpuinfo flags a CPU must show to run code built for ``target``."""
    return sorted({_CPUINFO[f] for f in llvm_features(target) if f in _CPUINFO})
