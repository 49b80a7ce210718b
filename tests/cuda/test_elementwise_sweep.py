"""Every elementwise op with an expression template (the registry's ``expr``), rendered into a
@cuda.jit kernel, against its numpy reference: ops added to the registry later are picked up."""
from __future__ import annotations

import numpy as np
import pytest

from netjit.compiler.ops.registry import BROADCAST, ELEMWISE, all_ops
from netjit.proto.args import make_op
from tests.compiler.test_registry_compiled import BOOL_ONLY, REQUIRED, SAMPLES
from tests.cuda.conftest import run_reference_and_cuda


def template_ops() -> list[str]:
    from netjit.compiler.codegen.numba_cpu import BACKEND
    out = []
    for name, opdef in sorted(all_ops().items()):
        lw = opdef.lowering.get(BACKEND)
        if opdef.category in (ELEMWISE, BROADCAST) and (opdef.expr or (lw is not None and lw.expr)):
            if name not in ("CopyCPUToGPU", "CopyGPUToCPU", "EnsureCPUOutput"):   # device moves, tested apart
                out.append(name)
    return out


@pytest.mark.parametrize("name", template_ops())
def test_template_op_kernel_matches_reference(name):
    opdef = all_ops()[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    n_in = max(1, opdef.schema.inputs[0])
    if name in BOOL_ONLY:
        feeds = {f"x{i}": rng.random((2, 3)) > 0.5 for i in range(n_in)}
    else:
        feeds = {f"x{i}": (rng.standard_normal((2, 3)) * 2).astype(np.float32) for i in range(n_in)}
    args = dict(REQUIRED.get(name, [{}])[0])
    # Arguments the op cannot default, and non-default values where the op reads them.
    declared = {a.name for a in opdef.schema.args}
    args.update({k: v for k, v in SAMPLES.items() if k in declared})
    ops = [make_op(name, list(feeds), ["y"], **args)]
    try:
        ref, got, text = run_reference_and_cuda(ops, feeds, ["y"])
    except Exception as err:  # noqa: BLE001
        if "reference" in str(err):
            pytest.skip(f"the reference rejects these inputs: {err}")
        raise
    assert " 0 host steps" in text and "backend=numba-cuda" in text, text
    assert got["y"].dtype == ref["y"].dtype and got["y"].shape == ref["y"].shape
    np.testing.assert_allclose(got["y"], ref["y"], rtol=1e-5, atol=1e-6, equal_nan=True)
