"""brew helpers: emitted ops and parameters, Caffe2's kwarg merge order and the defaults it leaks."""
from __future__ import annotations

import numpy as np
import pytest

from netjit import brew, core, workspace
from netjit.initializers import ExternalInitializer, Initializer
from netjit.model_helper import ModelHelper


def _args(op) -> dict:
    out = {}
    for a in op.arg:
        if a.HasField("s"):
            out[a.name] = a.s.decode()
        elif a.HasField("i"):
            out[a.name] = a.i
        elif a.HasField("f"):
            out[a.name] = a.f
        else:
            out[a.name] = list(a.ints) or list(a.floats) or list(a.strings)
    return out


def _arg_names(op) -> list[str]:
    return [a.name for a in op.arg]


def _init_ops(model) -> dict:
    return {op.output[0]: (op.type, _args(op)) for op in model.param_init_net.Proto().op}


# ------------------------------------------------------------------------------------------
# Leaked defaults
# ------------------------------------------------------------------------------------------
def test_fc_leaks_the_model_arg_scope_into_op_args():
    model = ModelHelper(name="fc")
    y = brew.fc(model, "x", "y", dim_in=3, dim_out=2)
    op = model.net.Proto().op[0]
    assert str(y) == "y" and list(op.input) == ["x", "y_w", "y_b"]
    assert _arg_names(op) == ["order", "use_cudnn", "cudnn_exhaustive_search"]
    assert _args(op) == {"order": "NCHW", "use_cudnn": 1, "cudnn_exhaustive_search": 0}
    assert not op.engine
    assert _init_ops(model) == {"y_w": ("XavierFill", {"shape": [2, 3]}), "y_b": ("ConstantFill", {"shape": [2]})}


@pytest.mark.parametrize("helper,op_type", [(brew.relu, "Relu"), (brew.tanh, "Tanh"), (brew.sigmoid, "Sigmoid"),
                                            (brew.max_pool, "MaxPool"), (brew.average_pool, "AveragePool")])
def test_cudnn_helpers_get_engine_order_and_search_args(helper, op_type):
    model = ModelHelper(name="act")
    helper(model, "x", "y")
    op = model.net.Proto().op[0]
    assert op.type == op_type and op.engine == "CUDNN"
    assert _arg_names(op) == ["order", "cudnn_exhaustive_search"]  # use_cudnn is consumed by the helper


def test_softmax_transpose_dropout_sum_leaks():
    model = ModelHelper(name="leaks")
    brew.softmax(model, "x", "p")
    brew.softmax(model, "p")                   # no output name: the net picks one
    brew.transpose(model, "x", "t", axes=[1, 0])
    out = brew.dropout(model, "x", "d", ratio=0.2, is_test=1)
    brew.sum(model, ["x", "x2"], "s")
    ops = model.net.Proto().op
    assert [op.engine for op in ops] == ["CUDNN", "CUDNN", "CUDNN", "CUDNN", ""]
    assert _arg_names(ops[0]) == ["order", "cudnn_exhaustive_search"]
    assert ops[1].output[0].endswith("/Softmax")
    assert _arg_names(ops[2]) == ["order", "cudnn_exhaustive_search", "axes"]
    assert str(out) == "d" and list(ops[3].output) == ["d", "_d_mask"]
    assert _args(ops[3]) == {"order": "NCHW", "cudnn_exhaustive_search": 0, "ratio": pytest.approx(0.2), "is_test": 1}
    assert _arg_names(ops[4]) == ["order", "use_cudnn", "cudnn_exhaustive_search"]


def test_dropout_without_cudnn_uses_default_engine_and_needs_is_test():
    model = ModelHelper(name="drop", arg_scope={"use_cudnn": False})
    brew.dropout(model, "x", "d", is_test=0)
    assert model.net.Proto().op[0].engine == "DEFAULT"
    with pytest.raises(ValueError, match="is_test"):
        brew.dropout(model, "x", "d2")


def test_conv_args_weights_and_kernel_forms():
    model = ModelHelper(name="conv")
    brew.conv(model, "x", "c1", dim_in=3, dim_out=8, kernel=5, stride=2, pad=1)
    brew.conv(model, "x", "c2", 4, 6, [3, 1], group=2, no_bias=True)
    brew.conv_nd(model, "v", "c3", 2, 4, [3, 3, 3])
    c1, c2, c3 = model.net.Proto().op
    assert list(c1.input) == ["x", "c1_w", "c1_b"] and c1.engine == "CUDNN"
    assert _arg_names(c1) == ["kernel", "order", "stride", "pad", "exhaustive_search"]
    assert _args(c1)["exhaustive_search"] == 0 and _args(c1)["kernel"] == 5
    assert list(c2.input) == ["x", "c2_w"] and _args(c2)["kernel_h"] == 3 and _args(c2)["kernel_w"] == 1
    assert _args(c2)["group"] == 2 and "no_bias" not in _args(c2)
    assert _args(c3)["kernels"] == [3, 3, 3]
    init = _init_ops(model)
    assert init["c1_w"][1]["shape"] == [8, 3, 5, 5] and init["c1_b"][1]["shape"] == [8]
    assert init["c2_w"][1]["shape"] == [6, 2, 3, 1] and "c2_b" not in init
    assert init["c3_w"][1]["shape"] == [4, 2, 3, 3, 3]
    nhwc = ModelHelper(name="nhwc", arg_scope={"order": "NHWC", "use_cudnn": False})
    brew.conv(nhwc, "x", "c", 3, 8, 5)
    assert _init_ops(nhwc)["c_w"][1]["shape"] == [8, 5, 5, 3] and not nhwc.net.Proto().op[0].engine
    with pytest.raises(ValueError, match="only engine"):
        brew.conv(model, "x", "bad", 3, 8, 5, engine="OTHER")


def test_group_conv_and_conv_transpose():
    model = ModelHelper(name="gc", arg_scope={"use_cudnn": False})
    brew.group_conv(model, "x", "g", 8, 8, 3, group=4)
    brew.conv_transpose(model, "x", "up", 8, 4, 2, stride=2)
    g, up = model.net.Proto().op
    assert _args(g)["group"] == 4 and _init_ops(model)["g_w"][1]["shape"] == [8, 2, 3, 3]
    assert up.type == "ConvTranspose" and list(up.input) == ["x", "up_w", "up_b"]
    assert _init_ops(model)["up_w"][1]["shape"] == [8, 4, 2, 2]
    assert _arg_names(up)[:2] == ["kernel", "order"]


def test_spatial_bn_params_and_outputs():
    model = ModelHelper(name="bn")
    out = brew.spatial_bn(model, "x", "bn", 4, epsilon=1e-3, is_test=False)
    op = model.net.Proto().op[0]
    assert str(out) == "bn"
    assert list(op.input) == ["x", "bn_s", "bn_b", "bn_rm", "bn_riv"]
    assert list(op.output) == ["bn", "bn_rm", "bn_riv", "bn_sm", "bn_siv"]
    assert _arg_names(op) == ["order", "use_cudnn", "cudnn_exhaustive_search", "epsilon", "is_test"]
    init = _init_ops(model)
    assert [init[k][1]["value"] for k in ("bn_s", "bn_b", "bn_rm", "bn_riv")] == [1.0, 0.0, 0.0, 1.0]
    assert all(init[k][0] == "ConstantFill" and init[k][1]["shape"] == [4] for k in init)
    assert [str(p) for p in model.params] == ["bn_s", "bn_b"]
    assert [str(p) for p in model.GetComputedParams()] == ["bn_rm", "bn_riv"]
    test_model = ModelHelper(name="bn_test", param_model=model, init_params=False)
    brew.spatial_bn(test_model, "x", "bn", 4, is_test=True)
    assert list(test_model.net.Proto().op[0].output) == ["bn"]


def test_lrn_prelu_concat_accuracy():
    model = ModelHelper(name="misc")
    assert str(brew.lrn(model, "x", "n", size=5, alpha=1e-4, beta=0.75)) == "n"
    brew.prelu(model, "x", "pr", num_channels=3)
    brew.concat(model, ["a", "b"], "cat", axis=1)
    brew.concat(model, ["a", "b"], "cat0", axis=0)
    brew.accuracy(model, ["p", "label"], "acc", top_k=3)
    lrn, prelu, cat, cat0, acc = model.net.Proto().op
    assert list(lrn.output) == ["n", "_n_scale"] and _args(lrn)["order"] == "NCHW"
    assert list(prelu.input) == ["x", "pr_slope"] and prelu.arg == []  # prelu takes no **kwargs
    assert _init_ops(model)["pr_slope"] == ("ConstantFill", {"shape": [3], "value": 0.25})
    assert list(cat.output) == ["cat", "_cat_concat_dims"] and "order" not in _args(cat)
    assert "order" in _args(cat0)  # axis=0 is falsy, so Caffe2 keeps order
    assert list(acc.input) == ["p", "label"] and acc.arg == []  # top_k is lost on the CPU


def test_iter_and_weight_decay():
    model = ModelHelper(name="train")
    it = brew.iter(model, "ITER")
    w = brew.fc(model, "x", "fc", 3, 2)
    loss = model.AveragedLoss(w, "loss")
    model.AddGradientOperators([loss])
    brew.add_weight_decay(model, 0.0)        # no-op
    n_ops = len(model.net.Proto().op)
    brew.add_weight_decay(model, 1e-4)
    init = model.param_init_net.Proto().op[0]
    assert (init.type, list(init.output)) == ("ConstantFill", ["ITER"])
    assert _args(init)["dtype"] == core.DataType.INT64 and _args(init)["value"] == 0
    assert init.device_option.device_type == 0 and init.device_option.HasField("cuda_gpu_id")
    assert _arg_names(init) == ["shape", "value", "dtype", "order", "use_cudnn", "cudnn_exhaustive_search"]
    first = model.net.Proto().op[0]
    assert str(it) == "ITER" and (first.type, list(first.input), list(first.output)) == ("Iter", ["ITER"], ["ITER"])
    decay = model.net.Proto().op[n_ops:]
    assert [(op.type, list(op.input), list(op.output)) for op in decay] == [
        ("WeightedSum", ["fc_w_grad", "ONE", "fc_w", "wd"], ["fc_w_grad"])]
    assert _init_ops(model)["wd"] == ("ConstantFill", {"shape": [1], "value": pytest.approx(1e-4)})


def test_db_input_helper():
    model = ModelHelper(name="dbh")
    brew.db_input(model, ["img", "lab"], batch_size=8, db="train.lmdb", db_type="lmdb")
    assert [op.type for op in model.param_init_net.Proto().op] == ["CreateDB"]
    assert list(model.net.Proto().op[0].input) == ["dbreader_train.lmdb"]


# ------------------------------------------------------------------------------------------
# Merge order, arg_scope, registration
# ------------------------------------------------------------------------------------------
def test_merge_order_model_scope_then_arg_scope_then_explicit():
    model = ModelHelper(name="merge", arg_scope={"order": "NHWC"})
    with brew.arg_scope([brew.relu, brew.fc], order="NCHW", axis=2):
        brew.relu(model, "x", "a")
        brew.relu(model, "x", "b", order="NHWC")
        with brew.arg_scope(brew.relu, order="XYZW"):
            brew.relu(model, "x", "c")
        brew.relu(model, "x", "d")
    brew.relu(model, "x", "e")
    orders = [_args(op)["order"] for op in model.net.Proto().op]
    assert orders == ["NCHW", "NHWC", "XYZW", "NCHW", "NHWC"]
    assert "axis" in _args(model.net.Proto().op[0])  # relu takes **kwargs: unknown keys become args
    assert brew.get_current_scope() == {}


def test_helpers_without_var_kwargs_drop_unknown_scope_keys():
    model = ModelHelper(name="strict", arg_scope={"num_channels": 2})
    brew.prelu(model, "x", "p")               # takes num_channels from the model's arg_scope
    assert _init_ops(model)["p_slope"][1]["shape"] == [2]
    with pytest.raises(TypeError):
        brew.prelu(model, "x", "q", unknown=1)


def test_initializers_tuples_classes_instances_external():
    model = ModelHelper(name="inits")
    brew.fc(model, "x", "a", 3, 2, weight_init=("GaussianFill", {"std": 0.5}), bias_init=("ConstantFill", {"value": 1.0}))
    brew.fc(model, "x", "b", 3, 2, WeightInitializer=Initializer, weight_init=("MSRAFill", {}))
    brew.fc(model, "x", "c", 3, 2, WeightInitializer=Initializer("UniformFill", min=-1.0, max=1.0))
    brew.fc(model, "x", "d", 3, 2, WeightInitializer=ExternalInitializer(), BiasInitializer=ExternalInitializer())
    init = _init_ops(model)
    assert init["a_w"] == ("GaussianFill", {"shape": [2, 3], "std": 0.5})
    assert init["a_b"] == ("ConstantFill", {"shape": [2], "value": 1.0})
    assert init["b_w"][0] == "MSRAFill" and init["c_w"][0] == "UniformFill"
    assert "d_w" not in init and "d_b" not in init and "d_w" in [str(p) for p in model.params]


def test_register_custom_helper_and_errors():
    def netjit_test_double_fc(model, blob_in, blob_out, dim, **kwargs):
        h = brew.fc(model, blob_in, blob_out + "_h", dim, dim, **kwargs)
        return brew.fc(model, h, blob_out, dim, dim)

    if not brew.has_helper(netjit_test_double_fc):
        brew.Register(netjit_test_double_fc)
    with pytest.raises(AttributeError, match="already exists"):
        brew.Register(netjit_test_double_fc)
    model = ModelHelper(name="custom")
    brew.netjit_test_double_fc(model, "x", "y", 4)
    assert [str(p) for p in model.params] == ["y_h_w", "y_h_b", "y_w", "y_b"]
    with pytest.raises(AttributeError, match="not registered"):
        brew.no_such_helper  # noqa: B018
    with pytest.raises(RuntimeError, match="first input of helper function should be model"):
        brew.fc("x", "y", 3, 2)
    assert brew.fc(model=model, blob_in="x", blob_out="kw", dim_in=4, dim_out=1) == "kw"


def test_brew_mlp_trains_from_the_init_net():
    model = ModelHelper(name="brew_mlp")
    h = brew.fc(model, "data", "h", 2, 8)
    h = brew.relu(model, h, h)
    pred = brew.fc(model, h, "pred", 8, 1)
    dist = model.SquaredL2Distance([pred, "target"], "dist")
    loss = model.AveragedLoss(dist, "loss")
    model.AddGradientOperators([loss])
    lr = model.param_init_net.ConstantFill([], "lr", shape=[1], value=-0.1)
    one = model.param_init_net.ConstantFill([], "ONE", shape=[1], value=1.0)
    for p in model.params:
        model.WeightedSum([p, one, model.param_to_grad[p], lr], p)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 2)).astype(np.float32)
    workspace.FeedBlob("data", x)
    workspace.FeedBlob("target", (x @ np.array([[1.0], [-2.0]], np.float32)))
    workspace.RunNetOnce(model.param_init_net)
    workspace.CreateNet(model.net)
    workspace.RunNet(model.net.Name())
    start = float(workspace.FetchBlob("loss"))
    workspace.RunNet(model.net.Name(), 200)
    assert float(workspace.FetchBlob("loss")) < 0.05 * start


def test_brew_cond_and_loop_build_if_and_while_ops():
    from caffe2.python import model_helper
    workspace.ResetWorkspace()
    for flag, want in ((True, [2.0, 4.0]), (False, [-1.0, -2.0])):
        outer = model_helper.ModelHelper(name="cond_outer")
        then = model_helper.ModelHelper(name="cond_then")
        then.net.Scale("x", "y", scale=2.0)
        other = model_helper.ModelHelper(name="cond_else")
        other.net.Scale("x", "y", scale=-1.0)
        brew.cond(outer, "c", ["x", "y"], then, other)
        assert [op.type for op in outer.net.Proto().op][-1] == "If"
        workspace.FeedBlob("c", np.array(flag))
        workspace.FeedBlob("x", np.float32([1, 2]))
        workspace.RunNetOnce(outer.net)
        np.testing.assert_array_equal(workspace.FetchBlob("y"), want)

    # while i < 5: i += 1, acc *= 2
    outer = model_helper.ModelHelper(name="loop_outer")
    body = model_helper.ModelHelper(name="loop_body")
    body.net.Add(["i", "one"], "i")
    body.net.Scale("acc", "acc", scale=2.0)
    cond = model_helper.ModelHelper(name="loop_cond")
    cond.net.LT(["i", "five"], "go")
    workspace.FeedBlob("i", np.int64(0).reshape(()))
    workspace.FeedBlob("one", np.int64(1).reshape(()))
    workspace.FeedBlob("five", np.int64(5).reshape(()))
    workspace.FeedBlob("acc", np.float32([1.0]))
    workspace.FeedBlob("go", np.array(True))
    brew.loop(outer, "go", ["i", "one", "five", "acc", "go"], body, cond)
    assert "While" in [op.type for op in outer.net.Proto().op]
    workspace.RunNetOnce(outer.net)
    assert int(workspace.FetchBlob("i")) == 5
    np.testing.assert_array_equal(workspace.FetchBlob("acc"), [32.0])
