"""core: Net construction, BlobReference chaining, CreateOperator's argument rules, scopes, Clone."""
import numpy as np
import pytest

from caffe2.proto import caffe2_pb2
from caffe2.python import core


def test_net_names_are_unique_per_process():
    a, b, c = core.Net("uniq_net"), core.Net("uniq_net"), core.Net("uniq_net")
    assert [a.Name(), b.Name(), c.Name()] == ["uniq_net", "uniq_net_1", "uniq_net_2"]


def test_op_methods_name_outputs_and_collect_external_inputs():
    net = core.Net("auto_names")
    y = net.Relu(["x"], None)
    assert str(y) == "auto_names/Relu"
    y2 = net.Relu([y])
    assert str(y2) == "auto_names/Relu_2"
    outs = net.FCGradient(["x", "w", "dy"], 3)
    assert [str(o) for o in outs] == [f"auto_names/FCGradient:{i}" for i in range(3)]
    assert list(net.Proto().external_input) == ["x", "w", "dy"]
    assert isinstance(y, core.BlobReference) and y.Net() is net


def test_blob_reference_chaining_and_equality():
    net = core.Net("chain")
    x = net.AddExternalInput("X")
    y = x.FC(["W", "b"], "Y")
    z = y.Relu([], "Z")
    ops = net.Proto().op
    assert [op.type for op in ops] == ["FC", "Relu"]
    assert list(ops[0].input) == ["X", "W", "b"] and list(ops[1].input) == ["Y"]
    assert z == "Z" and hash(z) == hash("Z") and str(z + "_grad") == "Z_grad"
    with pytest.raises(AttributeError, match="did you mean|Did you mean"):
        z.Rleu([], "Q")
    with pytest.raises(AttributeError, match="no net"):
        core.BlobReference("orphan").Relu([], "q")


def test_unknown_op_method_suggests_names():
    with pytest.raises(AttributeError, match=r"Rleu is not a registered operator.*'Relu'"):
        core.Net("bad").Rleu(["x"], ["y"])


def test_create_operator_argument_fields_follow_caffe2():
    op = core.CreateOperator("Foo", ["a"], ["b"], name="", f=1.5, i=3, flag=True, s="hi", b=b"raw",
                             fl=[1.0, 2.0], il=[1, 2], sl=["x", "y"], nd=np.array([1, 2], np.int64),
                             f32=np.array([0.5], np.float32), net=caffe2_pb2.NetDef(name="inner"),
                             skipped=None, random_seed=7)
    args = {a.name: a for a in op.arg}
    assert args["f"].f == 1.5 and args["i"].i == 3 and args["flag"].i == 1
    assert args["s"].s == b"hi" and args["b"].s == b"raw"
    assert list(args["fl"].floats) == [1.0, 2.0] and list(args["il"].ints) == [1, 2]
    assert list(args["sl"].strings) == [b"x", b"y"] and list(args["nd"].ints) == [1, 2]
    assert list(args["f32"].floats) == [0.5] and args["net"].n.name == "inner"
    assert "skipped" not in args and op.device_option.random_seed == 7
    assert op.HasField("name") and op.name == ""
    # kwargs keep their order, after explicit `arg` entries
    op2 = core.CreateOperator("Foo", [], [], arg=[caffe2_pb2.Argument(name="first", i=1)], z=1, a=2)
    assert [a.name for a in op2.arg] == ["first", "z", "a"]


def test_name_and_device_scopes():
    with core.NameScope("outer"):
        with core.NameScope("inner"):
            op = core.CreateOperator("Relu", ["x"], ["y"])
            assert core.ScopedName("w") == "outer/inner/w"
    assert list(op.input) == ["outer/inner/x"] and list(op.output) == ["outer/inner/y"]
    ref = core.BlobReference("kept")
    with core.NameScope("s"):
        op = core.CreateOperator("Relu", [ref], ["y"])
    assert list(op.input) == ["kept"], "BlobReferences are used as they are"
    gpu = core.DeviceOption(caffe2_pb2.CUDA, 1)
    with core.DeviceScope(gpu):
        op = core.CreateOperator("Relu", ["x"], ["y"])
        own = core.CreateOperator("Relu", ["x"], ["y"], device_option=core.DeviceOption(caffe2_pb2.CPU))
    assert op.device_option.device_type == 1 and op.device_option.cuda_gpu_id == 1
    assert own.device_option.device_type == 0
    assert not core.CreateOperator("Relu", ["x"], ["y"]).HasField("device_option")


def test_external_input_duplicates_and_outputs():
    net = core.Net("ext")
    net.AddExternalInput("a")
    with pytest.raises(AssertionError, match="already contains an input"):
        net.AddExternalInput("a")
    y = net.Relu("a", "y")
    net.AddExternalOutput(y)
    assert list(net.Proto().external_output) == ["y"]
    with pytest.raises(ValueError, match="does not define"):
        net.AddExternalOutput(core.BlobReference("nope"))


def test_clone_and_clone_partial():
    net = core.Net("orig")
    h = net.Relu("x", "h")
    y = net.Relu(h, "y")
    net.Relu("other", "unrelated")
    net.AddExternalOutput(y)
    clone = net.Clone("copy", blob_remap={"x": "x2"}, op_id_mask=[0, 1])
    assert clone.Name() == "copy" and len(clone.Proto().op) == 2
    assert list(clone.Proto().op[0].input) == ["x2"] and "x2" in clone.Proto().external_input
    part, outs = net.ClonePartial("part", ["h"], [y])
    assert [op.type for op in part.Proto().op] == ["Relu"]
    assert list(part.Proto().op[0].input) == ["h"] and str(outs[0]) == "part/y"


def test_next_blob_names():
    net = core.Net("nb")
    assert str(net.NextBlob("tmp")) == "tmp"
    assert str(net.NextBlob("tmp")) == "tmp_auto_0"
    with core.NameScope("sc"):
        assert str(net.NextScopedBlob("v")) == "sc/v"


def test_execution_step_and_plan_protos():
    n1, n2 = core.Net("step_net_a"), core.Net("step_net_b")
    n1.Relu("x", "y")
    step = core.execution_step("train", [n1, n2], num_iter=5)
    plan = core.Plan("p")
    plan.AddStep(step)
    proto = plan.Proto()
    assert [n.name for n in proto.network] == ["step_net_a", "step_net_b"]
    assert list(proto.execution_step[0].network) == ["step_net_a", "step_net_b"]
    assert proto.execution_step[0].num_iter == 5
    outer = core.execution_step("outer", [core.execution_step("inner", n1)], should_stop_blob="stop")
    assert outer.Proto().substep[0].num_iter == 1 and not outer.Proto().HasField("num_iter")
    with pytest.raises(ValueError, match="not both"):
        core.ExecutionStep("mixed", [n1]).AddSubstep(core.ExecutionStep("s"))


def test_global_init_and_registry():
    assert core.GlobalInit(["caffe2", "--caffe2_log_level=0"])
    assert "Relu" in core.RegisteredOperators() and core.IsOperator("FC")


def test_caffe2_alias_modules_are_netjit_modules():
    import netjit.initializers
    import netjit.workspace
    from caffe2.python import workspace
    from caffe2.python.modeling import initializers, parameter_info
    assert workspace is netjit.workspace
    assert initializers is netjit.initializers and parameter_info.ParameterTags is netjit.initializers.ParameterTags
    from caffe2.proto import caffe2_pb2 as alias_pb2
    from netjit.proto import caffe2_pb2 as own_pb2
    assert alias_pb2 is own_pb2
