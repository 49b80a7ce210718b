"""The bundle's native entry: one ``@cfunc`` that runs a plan, compiled to a relocatable object.

The entry takes four addresses (weights, scratch, the array of input pointers, the array of output
pointers), makes a ``carray`` view at each fixed offset, and calls the plan's kernels in order.
numba compiles the kernels into the entry's module, so one LLVM module holds the whole net. Before
``emit_object`` every symbol but the entry is made internal and global dead-code elimination
drops what the entry cannot reach; otherwise the object would need numba's runtime and Python's C
API (docs/numba-facts.md §2b). Code that allocates (im2col buffers) still calls the NRT allocator,
which the bundle's C part supplies (native.py).

>>> # module, natives, source = compile_entry(plan, "x86-64-v3")
>>> # obj, undefined = emit_object(module, natives, ["lenet_part0"], "x86-64-v3", "")
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


def _literal(value: Any) -> str:
    # Through np.int64/np.float64: a bare literal would type as Literal[int](20), and numba would
    # compile every kernel again for its literal arguments instead of reusing the plan's
    # specialisation (measured: a cold ResNet-50 build spent 94 s in the entry, 4 s warm).
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return f"_I({int(value)})"
    value = float(value)
    if math.isnan(value):
        return "_F(_nan)"
    if math.isinf(value):
        return "_F(_inf)" if value > 0 else "_F(-_inf)"
    return f"_F({value!r})"


# Steps per part: numba's typing and lowering grow faster than linearly with a function's size
# (measured: ResNet-50's 57 steps in one function took 25 s to compile, LeNet's 8 took 1 s).
PART_STEPS = 6


def entry_source(plan: AotPlan) -> tuple[str, dict[str, Any], int]:
    """The Python source of the entry's parts ``part0``, ``part1``, ... (each runs a few steps; the
    C part calls them in order), the names they refer to (kernels, casts) and the part count."""
    names: dict[str, Any] = {"_inf": math.inf, "_nan": math.nan, "_I": np.int64, "_F": np.float64}
    casts: dict[str, str] = {"uint64": "_p_uint64"}
    lines: list[str] = []
    parts = max(1, (len(plan.steps) + PART_STEPS - 1) // PART_STEPS)
    for part in range(parts):
        views: dict[tuple, str] = {}
        head = [f"def part{part}(w, s, ins, outs):"]
        if plan.inputs:
            head.append(f"    I = carray(_p_uint64(ins), ({len(plan.inputs)},))")
        if plan.outputs:
            head.append(f"    O = carray(_p_uint64(outs), ({len(plan.outputs)},))")

        def view(slot: Slot) -> str:
            key = (slot.region, slot.index, slot.offset, slot.shape, slot.dtype.str)
            if key in views:
                return views[key]
            cast = casts.setdefault(slot.dtype.name, f"_p_{slot.dtype.name}")
            base = {"weights": f"w + {slot.offset}", "scratch": f"s + {slot.offset}",
                    "input": f"I[{slot.index}]", "output": f"O[{slot.index}]"}[slot.region]
            var = f"a{len(views)}"
            views[key] = var
            head.append(f"    {var} = carray({cast}({base}), {tuple(slot.shape)!r})")
            return var

        body: list[str] = []
        for k in range(part * PART_STEPS, min(len(plan.steps), (part + 1) * PART_STEPS)):
            step = plan.steps[k]
            args = [view(a) if isinstance(a, Slot) else _literal(a) for a in step.args]
            names[f"K{k}"] = step.kernel
            body.append(f"    K{k}({', '.join(args)})      # op #{step.index} {step.op_type}")
        lines += head + body + ["    return 0", ""]
    for dtype, name in casts.items():
        names[name] = _pointer_caster(np.dtype(dtype))
    return "\n".join(lines), names, parts


def compile_entry(plan: AotPlan, cpu: str = "") -> tuple[Any, list[str], str]:
    """Compile the plan's entry parts with numba's ahead-of-time codegen (no JIT machine code):
    returns the LLVM module holding them and every kernel, the parts' symbols in it (numba's
    calling convention: ``int32 part(int32 *ret, void **exc, int64 w, s, ins, outs)``) and the
    source."""
    from numba import carray, types
    from numba.core.compiler import Flags, compile_extra
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target
    from numba.core.runtime import nrtdynmod
    source, names, parts = entry_source(plan)
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
    symbols = []
    with global_compiler_lock:
        for part in range(parts):
            cres = compile_extra(cpu_target.typing_context, context, namespace[f"part{part}"], (types.int64,) * 4,
                                 types.int32, flags, locals={}, library=library)
            symbols.append(cres.fndesc.llvm_func_name)
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
    return module, symbols, source


def emit_object(mod: Any, natives: list[str], symbols: list[str], cpu: str,
                features: str) -> tuple[bytes, list[str]]:
    """Object code for the entry parts ``natives`` of the LLVM module ``mod`` (see compile_entry),
    exported (hidden: only the C part calls them) as ``symbols``; also the names the code still
    needs from outside (libc/libm, the BLAS and NRT names the C part defines)."""
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    rename = dict(zip(natives, symbols))
    for fn in mod.functions:
        if fn.is_declaration:
            continue
        if fn.name in rename:
            fn.name = rename.pop(fn.name)
            fn.linkage = "external"
            fn.visibility = "hidden"        # NAME_run (the C part) is the exported door
        else:
            fn.linkage = "internal"
    if rename:
        raise RuntimeError(f"entry symbols {sorted(rename)} are not in their own module")
    for gv in mod.global_variables:
        if not gv.is_declaration:
            gv.linkage = "internal"
    mod.verify()
    tm = llvm.Target.from_default_triple().create_target_machine(
        cpu=cpu, features=features, opt=3, reloc="pic", codemodel="default")
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
    # Only dead-code elimination: the kernels were optimised one by one when numba compiled them,
    # and the pass builder's default O3 pipeline over the whole linked module cost most of the
    # object-code step (measured on LeNet: 3.7 s of 5.3 s) for no measurable run-time gain.
    mpm = llvm.create_new_module_pass_manager()
    mpm.add_global_dead_code_eliminate_pass()
    mpm.add_strip_dead_prototype_pass()
    mpm.run(mod, pb)
    undefined = sorted(fn.name for fn in mod.functions if fn.is_declaration and not fn.name.startswith("llvm."))
    undefined += sorted(gv.name for gv in mod.global_variables if gv.is_declaration)
    return tm.emit_object(mod), undefined
