"""The bundle's C part: ``NAME.h``, the exported C interface around the entry, and the few runtime
symbols the kernels' object code names, then ``cc -shared``.

What the C file defines (everything but ``NAME_*`` is hidden, so two bundles link side by side):

- ``NAME_run``: checks pointers (null, alignment) and calls the numba entry, turning its status
  into an error code; ``NAME_weights_bytes``/``NAME_scratch_bytes``/``NAME_num_inputs``/... queries;
- ``netjit_cblas_*``: the fixed names kernels call GEMM/GEMV through (codegen/blas.py), over the
  OpenBLAS copied into the bundle folder (found through ``rpath $ORIGIN``);
- ``NRT_MemInfo_alloc_aligned``/``NRT_MemInfo_call_dtor``/``NRT_Free``: numba's allocator entry
  points, over malloc/free, for kernels that allocate temporaries (im2col columns);
- ``numba_attempt_nocopy_reshape``: the stride computation behind ``ndarray.reshape``;
- (threaded bundles) the parallel-region entry points of numba's parfor lowering over a pthread
  pool of the bundle's own (pool.c), ``NAME_set_num_threads``/``NAME_get_num_threads``, and inert
  stand-ins for the few Python C-API calls numba's gufunc wrapper makes around a region (a GIL
  that does not exist here; an error report that becomes ``NAME_run``'s error code 2).

>>> # write_header(plan, "build/lenet/lenet.h"); link(plan, obj, "build/lenet", "cc")
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from netjit.compiler.aot.plan import AotPlan, TensorSpec

ERRORS = {0: "ok", 1: "a null pointer was passed", 2: "a kernel failed (out of memory?)",
          3: "weights or scratch is not 8-byte aligned"}

_RUNTIME = r"""
/* --- numba runtime entry points the kernels call (allocation of temporaries) --- */
typedef void (*nj_dtor)(void *data, size_t size, void *info);
typedef struct {            /* numba's MemInfo layout: generated code reads `data` directly */
    size_t refct; nj_dtor dtor; void *dtor_info; void *data; size_t size; void *external_allocator;
} nj_meminfo;

HIDDEN void *NRT_MemInfo_alloc_aligned(size_t size, unsigned align) {
    size_t a = align ? align : 1;
    char *base = (char *)malloc(sizeof(nj_meminfo) + size + a);
    if (!base) return NULL;
    nj_meminfo *mi = (nj_meminfo *)base;
    uintptr_t p = (uintptr_t)(base + sizeof(nj_meminfo));
    p = (p + a - 1) / a * a;
    mi->refct = 1; mi->dtor = NULL; mi->dtor_info = NULL;
    mi->data = (void *)p; mi->size = size; mi->external_allocator = NULL;
    return mi;
}
HIDDEN void NRT_MemInfo_call_dtor(void *m) {
    nj_meminfo *mi = (nj_meminfo *)m;
    if (mi->dtor) mi->dtor(mi->data, mi->size, mi->dtor_info);
    free(mi);
}
HIDDEN void NRT_Free(void *p) { free(p); }

/* Strides for viewing an array under a new shape without copying, or 0 when that is impossible.
   Axes of extent 1 are dropped, then old and new axes are matched in runs of equal product; a run
   of old axes must be laid out as one block (each stride the next one times its extent). */
static int nj_reshape_c(int64_t nd, const int64_t *dims, const int64_t *strides, int64_t newnd,
                        const int64_t *newdims, int64_t *newstrides, int64_t itemsize) {
    int64_t od[64], os[64], n = 0, total_old = 1, total_new = 1;
    if (nd > 64 || newnd > 64) return 0;
    for (int64_t i = 0; i < nd; i++) if (dims[i] != 1) { od[n] = dims[i]; os[n] = strides[i]; n++; }
    for (int64_t i = 0; i < n; i++) total_old *= od[i];
    for (int64_t i = 0; i < newnd; i++) total_new *= newdims[i];
    if (total_old != total_new) return 0;
    if (total_new == 0) { for (int64_t i = 0; i < newnd; i++) newstrides[i] = itemsize; return 1; }
    int64_t oi = 0, ni = 0;
    while (oi < n && ni < newnd) {
        int64_t oj = oi + 1, nj = ni + 1, po = od[oi], pn = newdims[ni];
        while (po != pn) {
            if (pn < po) pn *= newdims[nj++]; else po *= od[oj++];
        }
        for (int64_t k = oi; k < oj - 1; k++) if (os[k] != os[k + 1] * od[k + 1]) return 0;
        newstrides[nj - 1] = os[oj - 1];
        for (int64_t k = nj - 1; k > ni; k--) newstrides[k - 1] = newstrides[k] * newdims[k];
        oi = oj; ni = nj;
    }
    /* Trailing new axes of extent 1 take the stride an element would have. */
    int64_t last = ni > 0 ? newstrides[ni - 1] : itemsize;
    for (; ni < newnd; ni++) newstrides[ni] = last;
    return 1;
}
HIDDEN int numba_attempt_nocopy_reshape(int64_t nd, const int64_t *dims, const int64_t *strides,
                                        int64_t newnd, const int64_t *newdims, int64_t *newstrides,
                                        int64_t itemsize, int is_f_order) {
    if (!is_f_order) return nj_reshape_c(nd, dims, strides, newnd, newdims, newstrides, itemsize);
    /* Fortran order is C order on reversed axes. */
    int64_t rd[64], rs[64], rn[64], out[64];
    if (nd > 64 || newnd > 64) return 0;
    for (int64_t i = 0; i < nd; i++) { rd[i] = dims[nd - 1 - i]; rs[i] = strides[nd - 1 - i]; }
    for (int64_t i = 0; i < newnd; i++) rn[i] = newdims[newnd - 1 - i];
    if (!nj_reshape_c(nd, rd, rs, newnd, rn, out, itemsize)) return 0;
    for (int64_t i = 0; i < newnd; i++) newstrides[i] = out[newnd - 1 - i];
    return 1;
}
"""

_GUFUNC_GLUE = r"""
/* --- what numba's gufunc wrapper calls around a parallel region, outside Python --- */
static atomic_uint nj_failures;     /* kernels that reported an error (NAME_run returns 2) */
HIDDEN void numba_gil_ensure(void *state) { (void)state; }
HIDDEN void numba_gil_release(void *state) { (void)state; }
HIDDEN void *PyEval_SaveThread(void) { return NULL; }
HIDDEN void PyEval_RestoreThread(void *state) { (void)state; }
HIDDEN void *PyExc_RuntimeError = NULL;
HIDDEN void PyErr_SetString(void *type, const char *msg) { (void)type; (void)msg; atomic_fetch_add(&nj_failures, 1); }
HIDDEN void *PyExc_SystemError = NULL;
HIDDEN void *PyExc_StopIteration = NULL;
HIDDEN void PyErr_SetNone(void *type) { (void)type; atomic_fetch_add(&nj_failures, 1); }
HIDDEN void PyErr_Clear(void) {}
HIDDEN void *PyBytes_FromStringAndSize(const char *s, int64_t n) { (void)s; (void)n; return NULL; }
HIDDEN void *numba_unpickle(const char *s, int n, const char *h) { (void)s; (void)n; (void)h; return NULL; }
HIDDEN void *numba_runtime_build_excinfo_struct(void *a, void *b) { (void)a; (void)b; return NULL; }
HIDDEN int numba_do_raise(void *exc) { (void)exc; atomic_fetch_add(&nj_failures, 1); return 0; }
"""

# Symbols the C part defines for kernels with parallel regions and for error paths numba leaves in
# (build.py checks the object's undefined names against these).
POOL_SYMBOLS = frozenset({
    "numba_parallel_for", "get_num_threads", "get_thread_id", "set_num_threads", "get_sched_size",
    "allocate_sched", "deallocate_sched", "do_scheduling_signed", "do_scheduling_unsigned",
    "get_parallel_chunksize", "set_parallel_chunksize"})
THREAD_SYMBOLS = POOL_SYMBOLS | frozenset({"numba_gil_ensure", "numba_gil_release",
    "PyEval_SaveThread", "PyEval_RestoreThread", "PyExc_RuntimeError", "PyErr_SetString", "PyErr_Clear",
    "PyExc_SystemError", "PyExc_StopIteration", "PyErr_SetNone",
    "PyBytes_FromStringAndSize", "numba_unpickle", "numba_runtime_build_excinfo_struct", "numba_do_raise"})


def pool_source() -> str:
    return (Path(__file__).parent / "pool.c").read_text()


_BLAS = r"""
/* --- the GEMM/GEMV names kernels call (codegen/blas.py), over the bundled OpenBLAS --- */
extern void scipy_cblas_sgemm64_(int, int, int, int64_t, int64_t, int64_t, float, const void *, int64_t,
                                 const void *, int64_t, float, void *, int64_t);
extern void scipy_cblas_dgemm64_(int, int, int, int64_t, int64_t, int64_t, double, const void *, int64_t,
                                 const void *, int64_t, double, void *, int64_t);
extern void scipy_cblas_sgemv64_(int, int, int64_t, int64_t, float, const void *, int64_t, const void *,
                                 int64_t, float, void *, int64_t);
extern void scipy_cblas_dgemv64_(int, int, int64_t, int64_t, double, const void *, int64_t, const void *,
                                 int64_t, double, void *, int64_t);
extern int scipy_openblas_get_num_threads64_(void);
extern void scipy_openblas_set_num_threads64_(int);

HIDDEN void netjit_cblas_sgemm_ilp64(int o, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
        const void *a, int64_t lda, const void *b, int64_t ldb, float beta, void *c, int64_t ldc) {
    scipy_cblas_sgemm64_(o, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
HIDDEN void netjit_cblas_dgemm_ilp64(int o, int ta, int tb, int64_t m, int64_t n, int64_t k, double alpha,
        const void *a, int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc) {
    scipy_cblas_dgemm64_(o, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
HIDDEN void netjit_cblas_sgemv_ilp64(int o, int t, int64_t m, int64_t n, float alpha, const void *a,
        int64_t lda, const void *x, int64_t incx, float beta, void *y, int64_t incy) {
    scipy_cblas_sgemv64_(o, t, m, n, alpha, a, lda, x, incx, beta, y, incy);
}
HIDDEN void netjit_cblas_dgemv_ilp64(int o, int t, int64_t m, int64_t n, double alpha, const void *a,
        int64_t lda, const void *x, int64_t incx, double beta, void *y, int64_t incy) {
    scipy_cblas_dgemv64_(o, t, m, n, alpha, a, lda, x, incx, beta, y, incy);
}
HIDDEN int netjit_blas_get_num_threads(void) { return scipy_openblas_get_num_threads64_(); }
HIDDEN void netjit_blas_set_num_threads(int n) { scipy_openblas_set_num_threads64_(n); }
"""


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tensor_tables(kind: str, specs: list[TensorSpec]) -> list[str]:
    lines = []
    for k, t in enumerate(specs):
        dims = ", ".join(str(d) for d in t.shape) or "0"
        lines.append(f"static const int64_t {kind}_shape_{k}[] = {{{dims}}};")
    n = max(len(specs), 1)
    names = ", ".join(_c_string(t.name) for t in specs) or "0"
    dtypes = ", ".join(_c_string(t.dtype.name) for t in specs) or "0"
    ndims = ", ".join(str(len(t.shape)) for t in specs) or "0"
    sizes = ", ".join(str(t.nbytes) for t in specs) or "0"
    shapes = ", ".join(f"{kind}_shape_{k}" for k in range(len(specs))) or "0"
    lines += [f"static const char *const {kind}_names[{n}] = {{{names}}};",
              f"static const char *const {kind}_dtypes[{n}] = {{{dtypes}}};",
              f"static const int {kind}_ndims[{n}] = {{{ndims}}};",
              f"static const size_t {kind}_bytes[{n}] = {{{sizes}}};",
              f"static const int64_t *const {kind}_shapes[{n}] = {{{shapes}}};"]
    return lines


def c_source(plan: AotPlan, parts: list[str], with_blas: bool, threaded: bool = False) -> str:
    """The bundle's C file: the interface, the runtime symbols, (``with_blas``) the BLAS shim and
    (``threaded``) the thread pool."""
    p = plan.name
    out = ["/* Generated by netjit aot. */", "#include <stddef.h>", "#include <stdint.h>", "#include <stdlib.h>",
           "#include <stdatomic.h>",
           "#define EXPORT __attribute__((visibility(\"default\")))",
           "#define HIDDEN __attribute__((visibility(\"hidden\")))",
           _RUNTIME, _BLAS if with_blas else "", _GUFUNC_GLUE, pool_source() if threaded else "",
           "/* --- the interface --- */",
           *[f"extern int32_t {part}(int32_t *ret, void **exc, int64_t w, int64_t s, int64_t ins, int64_t outs);"
             for part in parts]]
    out += _tensor_tables("in", plan.inputs) + _tensor_tables("out", plan.outputs)
    errors = ", ".join(_c_string(ERRORS[k]) for k in sorted(ERRORS))
    pin_on = pin_off = ""
    # The entry's parts in plan order; a failing part (a kernel's error status) stops the run.
    calls = "\n    ".join(f"if (!status) status = {part}(&ret, &exc, w, s, i, o);" for part in parts)
    if with_blas:
        # OpenBLAS threads each GEMM as it likes unless told; its idle workers spin, which on a
        # small shared machine cost a LeNet bundle 10x (measured: 30.7 s vs 3.1 s for the MNIST
        # test set under load). So a run uses blas_threads threads (default 1, as the JIT's driver
        # pins it) and puts the caller's setting back afterwards.
        out.append(f"""static int blas_threads = 1;
EXPORT void {p}_set_blas_threads(int n) {{ blas_threads = n < 0 ? 0 : n; }}""")
        pin_on = ("int want = blas_threads, prev = want ? netjit_blas_get_num_threads() : 0;\n"
                  "    if (want && prev != want) netjit_blas_set_num_threads(want);")
        pin_off = "if (want && prev != want) netjit_blas_set_num_threads(prev);"
    else:
        out.append(f"EXPORT void {p}_set_blas_threads(int n) {{ (void)n; }}")
    if threaded:
        out.append(f"""EXPORT void {p}_set_num_threads(int n) {{ nj_pool_set_threads(n); }}
EXPORT int {p}_get_num_threads(void) {{ return nj_pool_threads(); }}""")
    else:
        out.append(f"""EXPORT void {p}_set_num_threads(int n) {{ (void)n; }}
EXPORT int {p}_get_num_threads(void) {{ return 1; }}""")
    out.append(f"""
static const char *const errors[] = {{{errors}}};
EXPORT size_t {p}_weights_bytes(void) {{ return {plan.weights_bytes}u; }}
EXPORT size_t {p}_scratch_bytes(void) {{ return {plan.scratch_bytes}u; }}
EXPORT int {p}_num_inputs(void) {{ return {len(plan.inputs)}; }}
EXPORT int {p}_num_outputs(void) {{ return {len(plan.outputs)}; }}
EXPORT const char *{p}_input_name(int i) {{ return i >= 0 && i < {len(plan.inputs)} ? in_names[i] : NULL; }}
EXPORT const char *{p}_input_dtype(int i) {{ return i >= 0 && i < {len(plan.inputs)} ? in_dtypes[i] : NULL; }}
EXPORT int {p}_input_ndim(int i) {{ return i >= 0 && i < {len(plan.inputs)} ? in_ndims[i] : -1; }}
EXPORT const int64_t *{p}_input_shape(int i) {{ return i >= 0 && i < {len(plan.inputs)} ? in_shapes[i] : NULL; }}
EXPORT size_t {p}_input_bytes(int i) {{ return i >= 0 && i < {len(plan.inputs)} ? in_bytes[i] : 0; }}
EXPORT const char *{p}_output_name(int i) {{ return i >= 0 && i < {len(plan.outputs)} ? out_names[i] : NULL; }}
EXPORT const char *{p}_output_dtype(int i) {{ return i >= 0 && i < {len(plan.outputs)} ? out_dtypes[i] : NULL; }}
EXPORT int {p}_output_ndim(int i) {{ return i >= 0 && i < {len(plan.outputs)} ? out_ndims[i] : -1; }}
EXPORT const int64_t *{p}_output_shape(int i) {{ return i >= 0 && i < {len(plan.outputs)} ? out_shapes[i] : NULL; }}
EXPORT size_t {p}_output_bytes(int i) {{ return i >= 0 && i < {len(plan.outputs)} ? out_bytes[i] : 0; }}
EXPORT const char *{p}_strerror(int code) {{
    return code >= 0 && code < (int)(sizeof(errors) / sizeof(errors[0])) ? errors[code] : "unknown error";
}}
EXPORT int {p}_run(const void *weights, void *scratch, const void *const *inputs, void *const *outputs) {{
    if (({plan.weights_bytes} && !weights) || ({plan.scratch_bytes} && !scratch)) return 1;
    if (((uintptr_t)weights | (uintptr_t)scratch) & 7) return 3;
    if ({len(plan.inputs)} && !inputs) return 1;
    if ({len(plan.outputs)} && !outputs) return 1;
    for (int i = 0; i < {len(plan.inputs)}; i++) if (!inputs[i]) return 1;
    for (int i = 0; i < {len(plan.outputs)}; i++) if (!outputs[i]) return 1;
    int32_t ret = 0; void *exc = NULL;
    unsigned failures = atomic_load(&nj_failures);
    {pin_on}
    int64_t w = (int64_t)(uintptr_t)weights, s = (int64_t)(uintptr_t)scratch;
    int64_t i = (int64_t)(uintptr_t)inputs, o = (int64_t)(uintptr_t)outputs;
    int32_t status = 0;
    {calls}
    {pin_off}
    return status != 0 || atomic_load(&nj_failures) != failures ? 2 : (int)ret;
}}
""")
    return "\n".join(out)


def header(plan: AotPlan) -> str:
    """NAME.h: the C interface, with names, shapes and dtypes as constants."""
    p, P = plan.name, plan.name.upper()
    lines = [f"/* {p}.h: generated by netjit aot from net {plan.net_name!r}. Link {p}.so.",
             " * The caller owns every buffer: weights (the bytes of " + f"{p}.weights.bin), a scratch arena",
             f" * of {p}_scratch_bytes() bytes, the inputs and the outputs (C order, dtypes below).",
             " * weights and scratch must be 8-byte aligned (64 recommended). NAME_run returns 0 or an",
             f" * error code ({p}_strerror). */",
             f"#ifndef {P}_H", f"#define {P}_H", "#include <stddef.h>", "#include <stdint.h>",
             "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
             f"#define {P}_WEIGHTS_BYTES {plan.weights_bytes}u",
             f"#define {P}_SCRATCH_BYTES {plan.scratch_bytes}u",
             f"#define {P}_NUM_INPUTS {len(plan.inputs)}",
             f"#define {P}_NUM_OUTPUTS {len(plan.outputs)}"]
    for kind, specs in (("INPUT", plan.inputs), ("OUTPUT", plan.outputs)):
        for k, t in enumerate(specs):
            lines += [f"/* {kind.lower()} {k}: {t.name!r} {t.dtype.name}{list(t.shape)} */",
                      f"#define {P}_{kind}{k}_NAME {_c_string(t.name)}",
                      f"#define {P}_{kind}{k}_DTYPE {_c_string(t.dtype.name)}",
                      f"#define {P}_{kind}{k}_NDIM {len(t.shape)}",
                      f"#define {P}_{kind}{k}_SHAPE {{{', '.join(str(d) for d in t.shape)}}}",
                      f"#define {P}_{kind}{k}_BYTES {t.nbytes}u"]
    lines += ["",
              f"size_t {p}_weights_bytes(void);",
              f"size_t {p}_scratch_bytes(void);          /* the planned activation arena */",
              f"int {p}_num_inputs(void);",
              f"int {p}_num_outputs(void);",
              f"const char *{p}_input_name(int i);       /* NULL when i is out of range */",
              f"const char *{p}_input_dtype(int i);      /* numpy's name: \"float32\", \"int64\", ... */",
              f"int {p}_input_ndim(int i);",
              f"const int64_t *{p}_input_shape(int i);",
              f"size_t {p}_input_bytes(int i);",
              f"const char *{p}_output_name(int i);",
              f"const char *{p}_output_dtype(int i);",
              f"int {p}_output_ndim(int i);",
              f"const int64_t *{p}_output_shape(int i);",
              f"size_t {p}_output_bytes(int i);",
              f"const char *{p}_strerror(int code);",
              f"/* OpenBLAS threads a run uses for its GEMMs: default 1 (the kernels split their own work;",
              f"   idle OpenBLAS workers spin); 0 leaves OpenBLAS's own setting. A no-op without GEMMs. */",
              f"void {p}_set_blas_threads(int n);",
              f"/* Threads a run splits its kernels over (the calling thread and n - 1 workers the bundle",
              f"   starts on the first run; idle workers sleep). Default: the online CPUs; n <= 0 restores",
              f"   that. Runs from several threads at once are safe (each with its own scratch): one run",
              f"   at a time uses the workers, the others run serially meanwhile. Do not dlclose NAME.so. */",
              f"void {p}_set_num_threads(int n);",
              f"int {p}_get_num_threads(void);",
              f"/* 0 = ok; 1 = a null pointer; 2 = a kernel failed; 3 = misaligned weights/scratch */",
              f"int {p}_run(const void *weights, void *scratch,",
              f"{' ' * (len(p) + 9)}const void *const *inputs, void *const *outputs);",
              "", "#ifdef __cplusplus", "}", "#endif", f"#endif /* {P}_H */", ""]
    return "\n".join(lines)


def openblas_files() -> list[Path]:
    """numpy's OpenBLAS and the libraries it needs (copied into a bundle that calls GEMM)."""
    import numpy
    libs = Path(numpy.__file__).resolve().parent.parent / "numpy.libs"
    found = sorted(Path(p) for p in glob.glob(str(libs / "*.so*")))
    if not any("openblas" in p.name for p in found):
        raise RuntimeError(f"no OpenBLAS in {libs}: a bundle whose kernels call GEMM needs numpy's "
                           "scipy_openblas64 build")
    return found


def link(plan: AotPlan, obj: bytes, parts: list[str], folder: Path, needs_blas: bool,
         cc: str | None = None, threaded: bool = False) -> Path:
    """Write the C file, copy the BLAS (when the kernels call it) and link ``NAME.so`` in ``folder``."""
    cc = cc or os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler {cc!r} on PATH (netjit aot links with the system compiler; set CC)")
    build = folder / "build"
    build.mkdir(exist_ok=True)
    (build / f"{plan.name}.o").write_bytes(obj)
    (build / f"{plan.name}_bundle.c").write_text(c_source(plan, parts, needs_blas, threaded))
    cmd = [cc, "-shared", "-fPIC", "-O2", "-fvisibility=hidden", "-o", str(folder / f"{plan.name}.so"),
           str(build / f"{plan.name}_bundle.c"), str(build / f"{plan.name}.o")]
    if needs_blas:
        blas = None
        for lib in openblas_files():
            shutil.copy2(lib, folder / lib.name)
            if "openblas" in lib.name:
                blas = lib.name
        cmd += [f"-L{folder}", f"-l:{blas}", "-Wl,-rpath,$ORIGIN", "-Wl,--enable-new-dtags"]
    cmd += ["-lm", "-lpthread"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"linking {plan.name}.so failed ({' '.join(cmd)}):\n{done.stderr}")
    shutil.rmtree(build)
    return folder / f"{plan.name}.so"
