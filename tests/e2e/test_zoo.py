"""The seven Caffe2 model-zoo predict nets: parse, parameter shapes from the architecture tables,
compiler verify/plan, and runs with random weights (compiled vs the numpy reference)."""
from __future__ import annotations

import numpy as np
import pytest

from netjit import workspace, zoo
from netjit.compiler.ops.registry import TensorType
from tests.conftest import shared_path

MODELS = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "vgg19", "zfnet512"]
# docs/model-zoo-ops.md: op counts and the one external output of each net.
INVENTORY = {"bvlc_alexnet": (23, "prob"), "densenet121": (668, "fc6"), "inception_v1": (142, "prob"),
             "inception_v2": (370, "prob"), "resnet50": (175, "gpu_0/softmax"), "vgg19": (45, "prob"),
             "zfnet512": (21, "gpu_0/softmax")}


@pytest.fixture(autouse=True)
def _zoo_present():
    shared_path("models", "zoo")


def test_all_models_are_available():
    assert zoo.zoo_models() == MODELS
    with pytest.raises(zoo.ZooError, match="unknown zoo model"):
        zoo.load_zoo_net("lenet")


@pytest.mark.parametrize("model", MODELS)
def test_net_parses_and_parameters_cover_every_external_input(model):
    net, data, shape = zoo.load_zoo_net(model)
    ops, output = INVENTORY[model]
    assert len(net.op) == ops and list(net.external_output) == [output]
    assert shape == (1, 3, 224, 224) and data in net.external_input
    params = zoo.zoo_param_shapes(model)
    read = {b for op in net.op for b in op.input}
    assert set(params) == {b for b in net.external_input if b != data and b in read}
    assert all(len(s) >= 1 and all(d > 0 for d in s) for s in params.values())
    final = zoo.zoo_blob_shapes(model)[output]
    assert final == ((1, 1000, 1, 1) if model == "densenet121" else (1, 1000))


# Published parameter counts (weights + biases + BN affine) of the same architectures; our nets also
# hold BN running mean/var (2 per BN channel) and densenet121 a separate per-channel Mul/Add (2 more).
@pytest.mark.parametrize("model, published, extra_per_bn_channel", [
    ("bvlc_alexnet", 60_965_224, 0), ("vgg19", 143_667_240, 0),
    ("resnet50", 25_557_032, 2), ("densenet121", 7_978_856, 4)])
def test_parameter_counts_match_the_published_architectures(model, published, extra_per_bn_channel):
    shapes = zoo.zoo_param_shapes(model)
    net, _, _ = zoo.load_zoo_net(model)
    bn_channels = sum(shapes[op.input[1]][0] for op in net.op if op.type == "SpatialBN")
    total = sum(int(np.prod(s)) for s in shapes.values())
    assert total == published + extra_per_bn_channel * bn_channels


# Inception module output depths from the GoogLeNet and BN-Inception papers' tables.
@pytest.mark.parametrize("model, depths", [
    ("inception_v1", {"3a": 256, "3b": 480, "4a": 512, "4b": 512, "4c": 512, "4d": 528, "4e": 832,
                      "5a": 832, "5b": 1024}),
    ("inception_v2", {"3a": 256, "3b": 320, "3c": 576, "4a": 576, "4b": 576, "4c": 608, "4d": 608,
                      "4e": 1056, "5a": 1024, "5b": 1024})])
def test_inception_module_depths(model, depths):
    blobs = zoo.zoo_blob_shapes(model)
    assert {m: blobs[f"inception_{m}/output"][1] for m in depths} == depths


def test_known_parameter_shapes():
    assert zoo.zoo_param_shapes("bvlc_alexnet")["conv2_w"] == (256, 48, 5, 5)        # group 2
    assert zoo.zoo_param_shapes("bvlc_alexnet")["fc6_w"] == (4096, 256 * 6 * 6)
    assert zoo.zoo_param_shapes("resnet50")["gpu_0/res4_3_branch2b_w"] == (256, 256, 3, 3)
    assert zoo.zoo_param_shapes("resnet50")["gpu_0/res5_0_branch1_w"] == (2048, 1024, 1, 1)
    assert zoo.zoo_param_shapes("resnet50")["gpu_0/pred_w"] == (1000, 2048)
    assert zoo.zoo_param_shapes("densenet121")["conv3_blk_w"] == (256, 512, 1, 1)     # transition halves
    assert zoo.zoo_param_shapes("densenet121")["fc6_w"] == (1000, 1024, 1, 1)
    assert zoo.zoo_param_shapes("densenet121")["conv4_24/x1/bn_w"] == (256 + 23 * 32,)  # 24th layer input
    assert zoo.zoo_param_shapes("inception_v1")["loss3/classifier_w"] == (1, 1, 1000, 1024)  # axis_w 3
    assert zoo.zoo_param_shapes("vgg19")["fc6_w"] == (4096, 512 * 7 * 7)
    assert zoo.zoo_param_shapes("zfnet512")["gpu_0/conv4_w"] == (1024, 512, 3, 3)


def test_random_weights_are_seeded_and_well_formed():
    a = zoo.random_zoo_weights("resnet50", seed=3)
    b = zoo.random_zoo_weights("resnet50", seed=3)
    c = zoo.random_zoo_weights("resnet50", seed=4)
    shapes = zoo.zoo_param_shapes("resnet50")
    assert list(a) == list(shapes)
    for name, value in a.items():
        assert value.dtype == np.float32 and value.shape == shapes[name] and value.flags.c_contiguous
        np.testing.assert_array_equal(value, b[name])
    assert not np.array_equal(a["gpu_0/conv1_w"], c["gpu_0/conv1_w"])
    riv = [v for k, v in a.items() if k.endswith("_riv")]
    assert len(riv) == 53 and all((v > 0).all() for v in riv)
    # MSRA scale: std ~ sqrt(2 / fan_in)
    w = a["gpu_0/res3_0_branch2b_w"]
    assert abs(w.std() / np.sqrt(2.0 / (128 * 9)) - 1) < 0.05


# ------------------------------------------------------------------------------ compiler
def _compiler_passes():
    try:
        from netjit.compiler import ir
        from netjit.compiler.passes import buffers, infer
    except ImportError as err:
        pytest.skip(f"compiler IR/passes not available yet ({err})")
    return ir, infer, buffers


@pytest.mark.parametrize("model", MODELS)
def test_compiler_imports_verifies_and_plans(model):
    ir, infer, buffers = _compiler_passes()
    net, data, shape = zoo.load_zoo_net(model)
    graph = ir.verify(ir.import_netdef(net))
    signature = {data: TensorType(shape, np.dtype(np.float32))}
    signature.update({b: TensorType(s, np.dtype(np.float32)) for b, s in zoo.zoo_param_shapes(model).items()})
    typed, barrier = infer.infer_types(graph, signature)
    assert barrier == len(typed.nodes), f"inference stopped at node {barrier}: {typed.nodes[barrier].describe()}"
    ir.verify(typed)
    expected = zoo.zoo_blob_shapes(model)
    for blob, value_name in typed.outputs.items():
        assert tuple(typed.value(value_name).shape) == expected[blob], blob

    # The compiler's own pipeline on the same signature: one plan over every op, a verified arena.
    from netjit.compiler.api import compile as compile_net
    plans = compile_net(net, inputs=signature).plans_at(0)
    assert len(plans) == 1 and (plans[0].start, plans[0].stop) == (0, len(net.op)), \
        [(p.start, p.stop) for p in plans]
    plan = plans[0].buffers
    buffers.verify_buffers(plan)
    assert 0 < plan.lower_bound <= plan.arena_bytes <= plan.total_bytes


# ------------------------------------------------------------------------------ running
def _run(model: str, executor: str | None, monkeypatch) -> dict[str, np.ndarray]:
    """Feed random weights and input into a fresh workspace, run the predict net once, return every
    float blob it wrote."""
    if executor:
        monkeypatch.setenv("NETJIT_EXECUTOR", executor)
    else:
        monkeypatch.delenv("NETJIT_EXECUTOR", raising=False)
    net, data, _ = zoo.load_zoo_net(model)
    workspace.SwitchWorkspace(f"zoo_{model}_{executor}", True)
    workspace.ResetWorkspace()
    for name, value in zoo.random_zoo_weights(model).items():
        workspace.FeedBlob(name, value)
    workspace.FeedBlob(data, zoo.random_zoo_input(model))
    workspace.RunNetOnce(net)
    written = dict.fromkeys(b for op in net.op for b in op.output)
    blobs = {b: workspace.FetchBlob(b) for b in written}
    return {b: v for b, v in blobs.items() if v.dtype == np.float32}


@pytest.mark.parametrize("model", ["bvlc_alexnet", "inception_v1", "inception_v2", "zfnet512"])
def test_reference_run_matches_inferred_shapes(model, monkeypatch):
    blobs = _run(model, "reference", monkeypatch)
    expected = zoo.zoo_blob_shapes(model)
    for name, value in blobs.items():
        assert value.shape == expected[name], name
        assert np.isfinite(value).all(), name
    net, _, _ = zoo.load_zoo_net(model)
    prob = blobs[net.external_output[0]]
    np.testing.assert_allclose(prob.sum(), 1.0, rtol=1e-5)


# Compiled vs reference: when the compiled kernels sum float32 in another order (GEMM blocking, BN
# folded into conv weights) results drift by ~1e-6 relative per layer; after ~50-120 layers with
# activations up to ~50 we allow 1e-3 relative plus 1e-3 of each blob's largest magnitude. (Measured
# today: identical outputs, max abs diff 0, as both paths call the same BLAS GEMMs.)
@pytest.mark.parametrize("model, logits", [("resnet50", "gpu_0/pred"), ("densenet121", "fc6")])
def test_compiled_matches_reference(model, logits, monkeypatch):
    want = _run(model, "reference", monkeypatch)
    got = _run(model, None, monkeypatch)
    net, _, _ = zoo.load_zoo_net(model)
    for name in dict.fromkeys([logits, net.external_output[0]]):
        ref = want[name]
        assert got[name].shape == ref.shape and np.isfinite(ref).all()
        np.testing.assert_allclose(got[name], ref, rtol=1e-3, atol=1e-3 * float(np.abs(ref).max()),
                                   err_msg=name)
    assert np.argmax(got[logits]) == np.argmax(want[logits])
    expected = zoo.zoo_blob_shapes(model)
    assert {k: v.shape for k, v in want.items()} == {k: expected[k] for k in want}

    # netjit.compile with only the net's output visible (intermediates fused away, arena reused).
    from netjit.compiler.api import compile as compile_net
    feeds = dict(zoo.random_zoo_weights(model))
    data = zoo.load_zoo_net(model)[1]
    feeds[data] = zoo.random_zoo_input(model)
    exe = compile_net(net, inputs=feeds)
    output = net.external_output[0]
    for _ in range(2):  # the second run reuses the plan and its arena
        result = exe(**feeds)[output]
        np.testing.assert_allclose(result, want[output], rtol=1e-3,
                                   atol=1e-3 * float(np.abs(want[output]).max()), err_msg=output)
