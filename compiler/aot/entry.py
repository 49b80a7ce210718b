"""The bundle's native entry: one ``@cfunc`` that runs a plan, compiled to a relocatable object.

The entry takes four addresses (weights, scratch, the array of input pointers, the array of output
pointers), makes a ``carray`` view at each fixed offset, and calls the plan's kernels in order.
numba compiles the kernels into the entry's module, so one LLVM module holds the whole net. Before
``emit_object`` every symbol but the entry is made internal and global dead-code elimination
drops what the entry cannot reach; otherwise the object would need numba's runtime and Python's C
API (docs/numba-facts.md §2b). Code that allocates (im2col buffers) still calls the NRT allocator,
which the bundle's C part supplies (native.py).

>>> # obj, undefined = emit_object(plan, "lenet_impl", "x86-64-v3", "")
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from netjit.compiler.aot.plan import AotPlan, Slot


def _pointer_caster(dtype: np.dtype) -> Callable:
    """An intrinsic turning an integer address into a typed pointer (``carray``'s first argument)."""
    from numba import from_dtype, types
    from numba.core.extending import intrinsic
    nbt = from_dtype(np.dtype(dtype))

    @intrinsic
    def cast(typingctx: Any, addr: Any) -> Any:
        if not isinstance(addr, types.Integer):
            return None

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.inttoptr(args[0], context.get_value_type(types.CPointer(nbt)))
        return types.CPointer(nbt)(addr), codegen
    return cast


def _copy_bytes() -> Callable:
    from numba import njit

    @njit(nogil=True, error_model="numpy")
    def copy_bytes(src, dst):
        for i in range(src.size):
            dst[i] = src[i]
    return copy_bytes


def _literal(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "_nan"
    if math.isinf(value):
        return "_inf" if value > 0 else "(-_inf)"
    return repr(value)


def entry_source(plan: AotPlan) -> tuple[str, dict[str, Any]]:
    """The Python source of the entry and the names it refers to (kernels, casts)."""
    names: dict[str, Any] = {"_inf": math.inf, "_nan": math.nan}
    casts: dict[str, str] = {}
    views: dict[tuple, str] = {}
    lines = ["def entry(w, s, ins, outs):"]
    if plan.inputs:
        lines.append(f"    I = carray(_p_uint64(ins), ({len(plan.inputs)},))")
    if plan.outputs:
        lines.append(f"    O = carray(_p_uint64(outs), ({len(plan.outputs)},))")
    casts["uint64"] = "_p_uint64"

    def view(slot: Slot) -> str:
        key = (slot.region, slot.index, slot.offset, slot.shape, slot.dtype.str)
        if key in views:
            return views[key]
        cast = casts.setdefault(slot.dtype.name, f"_p_{slot.dtype.name}")
        base = {"weights": f"w + {slot.offset}", "scratch": f"s + {slot.offset}",
                "input": f"I[{slot.index}]", "output": f"O[{slot.index}]"}[slot.region]
        var = f"a{len(views)}"
        views[key] = var
        lines.append(f"    {var} = carray({cast}({base}), {tuple(slot.shape)!r})")
        return var

    body: list[str] = []
    for k, step in enumerate(plan.steps):
        args = [view(a) if isinstance(a, Slot) else _literal(a) for a in step.args]
        if step.kind == "copy":
            names["_copy"] = _copy_bytes()
            body.append(f"    _copy({', '.join(args)})")
        else:
            names[f"K{k}"] = step.kernel.fn
            body.append(f"    K{k}({', '.join(args)})      # op #{step.index} {step.op_type}")
    lines += body + ["    return 0"]
    for dtype, name in casts.items():
        names[name] = _pointer_caster(np.dtype(dtype))
    return "\n".join(lines) + "\n", names


def compile_entry(plan: AotPlan, cpu: str = "") -> tuple[Any, str, str]:
    """Compile the plan's entry with numba's ahead-of-time codegen (no JIT machine code): returns
    the LLVM module holding it and every kernel, the entry's symbol in it and the entry's source."""
    from numba import carray, types
    from numba.core.compiler import Flags, compile_extra
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target
    from numba.core.runtime import nrtdynmod
    source, names = entry_source(plan)
    namespace: dict[str, Any] = {"carray": carray, **names}
    exec(compile(source, f"<netjit aot entry {plan.name}>", "exec"), namespace)
    context = cpu_target.target_context.with_aot_codegen(f"netjit_aot_{plan.name}", cpu_name=cpu or "host")
    library = context.codegen().create_library(f"netjit_aot_{plan.name}")
    library.add_ir_module(nrtdynmod.create_nrt_module(context)[0])
    flags = Flags()
    flags.no_compile = True
    flags.no_cpython_wrapper = True
    flags.no_cfunc_wrapper = True
    flags.nrt = True
    flags.error_model = "numpy"
    with global_compiler_lock:
        cres = compile_extra(cpu_target.typing_context, context, namespace["entry"], (types.int64,) * 4,
                             types.int32, flags, locals={}, library=library)
        # Link the kernels' (already optimised) modules in, as numba's finalize() would, but skip
        # its O3 pass over the whole linked module: it re-optimised every kernel and took most of
        # a build (measured: 18 s of 29 s for a small CNN on the loaded 2-core VM).
        module = library._final_module
        seen: set[int] = set()
        for lib in library._linking_libraries:
            if id(lib) not in seen:
                seen.add(id(lib))
                module.link_in(lib._get_module_for_linking(), preserve=True)
        module.verify()
    return module, cres.fndesc.llvm_func_name, source


def emit_object(mod: Any, native: str, symbol: str, cpu: str, features: str) -> tuple[bytes, list[str]]:
    """Object code for the entry ``native`` of the LLVM module ``mod`` (see compile_entry) exported as
    ``symbol``; also the names it still needs from outside (libc/libm, the BLAS and NRT names
    the C part defines)."""
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    found = False
    for fn in mod.functions:
        if fn.is_declaration:
            continue
        if fn.name == native:
            fn.name = symbol
            fn.linkage = "external"
            fn.visibility = "hidden"        # NAME_run (the C part) is the exported door
            found = True
        else:
            fn.linkage = "internal"
    if not found:
        raise RuntimeError(f"the entry symbol {native!r} is not in its own module")
    for gv in mod.global_variables:
        if not gv.is_declaration:
            gv.linkage = "internal"
    mod.verify()
    tm = llvm.Target.from_default_triple().create_target_machine(
        cpu=cpu, features=features, opt=3, reloc="pic", codemodel="default")
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
    mpm = pb.getModulePassManager()
    mpm.add_global_dead_code_eliminate_pass()
    mpm.add_strip_dead_prototype_pass()
    mpm.run(mod, pb)
    undefined = sorted(fn.name for fn in mod.functions if fn.is_declaration and not fn.name.startswith("llvm."))
    undefined += sorted(gv.name for gv in mod.global_variables if gv.is_declaration)
    return tm.emit_object(mod), undefined
