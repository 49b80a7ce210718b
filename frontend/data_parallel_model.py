"""Caffe2's ``data_parallel_model`` with processes as shards: synchronous SGD over MPI.

Each process (an MPI rank, launched by ``mpiexec``) builds the same model with :func:`Parallelize`.
Its ``devices`` are model copies inside the process (name scopes ``cpu_0/``, ``cpu_1/``, ...); the
``rendezvous`` dict joins the processes. As in Caffe2, the forward builder scales its loss by
``loss_scale = 1 / (len(devices) * num_shards)`` and the gradients are *summed* (local Sum, then
``Allreduce`` across ranks), which makes every rank's gradient the average over the global batch;
parameters (and every other blob the param init net makes in a device scope) are broadcast from
rank 0 when the init net runs, so all ranks start, and stay, bitwise identical.

    from caffe2.python import data_parallel_model as dpm
    rendezvous = dict(kv_handler=None, shard_id=None, num_shards=None, engine="MPI")  # None: from mpiexec
    dpm.Parallelize(model, input_builder_fun=add_input, forward_pass_builder_fun=add_lenet,
                    param_update_builder_fun=add_sgd, devices=[0], cpu_device=True, rendezvous=rendezvous)
    dpm.RunInitNet(model)
    dpm.RunNet(model, 10)

Under ``mpiexec`` the shard numbering is the MPI world's: ``shard_id``/``num_shards`` left as None
are filled in (also in the caller's dict); given values that disagree with the MPI world are an error.
A ``kv_handler`` (from FileStoreHandlerCreate) and ``engine="GLOO"`` are accepted and run on MPI.
"""
from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from typing import Any, Callable, Iterable

from netjit import core, scope, workspace
from netjit.model_helper import ModelHelper
from netjit.model_helper import ExtractPredictorNet as _extract_predictor_net
from netjit.proto import caffe2_pb2

log = logging.getLogger("data_parallel_model")

_DEFAULT_TIMEOUT_SEC = 30
_DEFAULT_BARRIER_NET_TIMEOUT_SEC = 300
_SEP = "/"


# --------------------------------------------------------------------------------------------
# Rendezvous
# --------------------------------------------------------------------------------------------
def MPIRendezvous(engine: str = "MPI") -> dict:
    """A rendezvous dict for this MPI world: ``dict(kv_handler=None, shard_id=rank, num_shards=size,
    engine=engine)`` (imports mpi4py)."""
    from netjit.runtime.mpi_world import world_rank_size
    rank, size = world_rank_size()
    return dict(kv_handler=None, shard_id=rank, num_shards=size, engine=engine)


def _resolve_rendezvous(rendezvous: dict | None) -> dict | None:
    """Check a script's rendezvous against the MPI world and fill in what it left as None."""
    if rendezvous is None:
        return None
    if not isinstance(rendezvous, dict):
        raise TypeError(f"rendezvous must be a dict (kv_handler, shard_id, num_shards, engine), got {rendezvous!r}")
    from netjit.runtime.mpi_world import world_rank_size
    rank, size = world_rank_size()
    given_shards, given_id = rendezvous.get("num_shards"), rendezvous.get("shard_id")
    if given_shards is not None and int(given_shards) != size:
        raise ValueError(f"rendezvous num_shards={given_shards}, but mpiexec started {size} rank(s): launch with "
                         f"`mpiexec -n {given_shards} ...`, or pass num_shards=None to take it from MPI")
    if given_id is not None and int(given_id) != rank:
        raise ValueError(f"rendezvous shard_id={given_id}, but this process is MPI rank {rank}: shard ids "
                         f"come from the MPI world (pass shard_id=None, or the rank)")
    rendezvous.setdefault("kv_handler", None)
    rendezvous.setdefault("engine", "MPI")
    rendezvous["num_shards"], rendezvous["shard_id"] = size, rank
    return rendezvous


def _distributed(model: ModelHelper) -> bool:
    rdv = model._rendezvous
    return rdv is not None and rdv["num_shards"] > 1


# --------------------------------------------------------------------------------------------
# Parallelize
# --------------------------------------------------------------------------------------------
def Parallelize_GPU(*args: Any, **kwargs: Any) -> None:
    kwargs["cpu_device"] = False
    Parallelize(*args, **kwargs)


def Parallelize_CPU(*args: Any, **kwargs: Any) -> None:
    kwargs["cpu_device"] = True
    Parallelize(*args, **kwargs)


def Parallelize(model_helper_obj: ModelHelper, input_builder_fun: Callable, forward_pass_builder_fun: Callable,
                param_update_builder_fun: Callable | None = None, optimizer_builder_fun: Callable | None = None,
                post_sync_builder_fun: Callable | None = None, net_transformer_fun: Callable | None = None,
                devices: Iterable[int] | None = None, rendezvous: dict | None = None, net_type: str = "dag",
                broadcast_computed_params: bool = True, optimize_gradient_memory: bool = False,
                dynamic_memory_management: bool = False, blobs_to_keep: Any = None, use_nccl: bool = False,
                max_concurrent_distributed_ops: int = 16, cpu_device: bool = False,
                num_threads_per_device: int = 4, shared_model: bool = False, combine_spatial_bn: bool = False,
                barrier_net_timeout_sec: int = _DEFAULT_BARRIER_NET_TIMEOUT_SEC) -> None:
    """Build ``model`` for synchronous data-parallel training (see the module docstring).

    ``forward_pass_builder_fun(model, loss_scale)`` returns the list of loss blobs; exactly one of
    ``param_update_builder_fun(model)`` (called per device, in its name scope) or
    ``optimizer_builder_fun(model)`` (called once; its result is kept as ``model._optimizer``)
    adds the updates. ``optimize_gradient_memory``/``dynamic_memory_management`` are accepted and
    left to the compiler, which plans every net's buffers itself; ``use_nccl`` has no meaning here.
    ``shared_model`` (CPU) keeps one parameter copy for all local devices; ``combine_spatial_bn`` is
    accepted with one device per process (nothing to combine) and refused with more.
    """
    if combine_spatial_bn and devices is not None and len(list(devices)) > 1:
        raise ValueError("combine_spatial_bn (batch statistics across the devices of one process) is not "
                         "supported by netjit's data_parallel_model; with one device per process it has "
                         "nothing to combine")
    if shared_model and not cpu_device:
        raise ValueError("Shared model only supported on CPU")
    current = scope.CurrentDeviceScope()
    if current is not None and current.device_type != caffe2_pb2.CPU:
        raise ValueError(f"Parallelize must be called without a device scope, device scope was: {current}")
    if not isinstance(model_helper_obj, ModelHelper):
        raise TypeError(f"Parallelize needs a ModelHelper, got {type(model_helper_obj).__name__}")
    if param_update_builder_fun is not None and optimizer_builder_fun is not None:
        raise ValueError("Can only specify one of param_update_builder_fun, optimizer_builder_fun")
    if devices is None:
        if not cpu_device:
            raise ValueError("Parallelize_GPU needs devices=[...] (the GPU ids)")
        devices = [0]
    devices = list(devices)
    model = model_helper_obj
    model._device_type = caffe2_pb2.CPU if cpu_device else caffe2_pb2.CUDA
    model._device_prefix = "cpu" if cpu_device else "gpu"
    # One parameter copy for all local devices (CPU): non-first copies are remapped to the first.
    model._shared_model = bool(shared_model) and len(devices) > 1
    rendezvous = _resolve_rendezvous(rendezvous)
    log.info("Parallelizing model for devices: %s (shard %s of %s)", devices,
             rendezvous["shard_id"] if rendezvous else 0, rendezvous["num_shards"] if rendezvous else 1)
    num_workers = len(devices) * num_threads_per_device + (8 if rendezvous is not None else 0)
    max_concurrent_distributed_ops = max(1, min(max_concurrent_distributed_ops, num_workers - 1))
    model.net.Proto().num_workers = num_workers
    model.net.Proto().type = net_type

    model._devices = devices
    model._rendezvous = rendezvous
    model._sync_barrier_net = None
    model._broadcast_context = None
    model._grad_names = []
    model._optimizer = None
    has_updates = param_update_builder_fun is not None or optimizer_builder_fun is not None
    if not has_updates and model.init_params:
        log.warning("Model %s is used for testing/validation but has init_params=True: running its param init "
                    "net would overwrite the trained parameters (use ModelHelper(init_params=False))", model.name)

    non_datapar_params = copy.copy(model.params)
    num_shards = rendezvous["num_shards"] if rendezvous else 1
    loss_scale = 1.0 / (len(devices) * num_shards)
    losses_by_device: dict[int, Any] = {}
    for device in devices:
        with core.DeviceScope(core.DeviceOption(model._device_type, device)):
            with core.NameScope(f"{model._device_prefix}_{device}"):
                input_builder_fun(model)
                losses = forward_pass_builder_fun(model, loss_scale)
                if has_updates:
                    if not isinstance(losses, list) or not all(isinstance(l, core.BlobReference) for l in losses):
                        raise TypeError("forward_pass_builder_fun must return a list of loss blobs "
                                        f"(BlobReferences), got {losses!r}")
                losses_by_device[device] = losses
    _ValidateParams(model.params)

    model._device_grouped_blobs = _GroupByDevice(model, devices, model.params, non_datapar_params)
    computed = _GroupByDevice(model, devices, model.GetComputedParams(""), [])
    model._device_grouped_blobs.update(computed)
    model._param_names = list(model._device_grouped_blobs)
    model._computed_param_names = list(computed)

    if has_updates:
        _AddGradientOperators(devices, model, losses_by_device)
    if net_transformer_fun:
        net_transformer_fun(model, len(devices), model._device_prefix, model._device_type)
    if not has_updates:
        log.info("Parameter update function not defined --> only forward")
        return
    if optimize_gradient_memory or dynamic_memory_management:
        log.info("gradient memory options: netjit's compiler plans every net's buffers itself")

    param_to_grad = model.param_to_grad
    grads_ordered = [param_to_grad[p] for p in model.params if p in param_to_grad]
    non_datapar_grads = [param_to_grad[p] for p in non_datapar_params if p in param_to_grad]
    grads_grouped = _GroupByDevice(model, devices, grads_ordered, non_datapar_grads)
    model._device_grouped_blobs.update(grads_grouped)
    model._grad_names = list(grads_grouped)
    model._losses_by_gpu = losses_by_device

    if broadcast_computed_params:
        for name in model._computed_param_names:
            _Broadcast(devices, model, model.net, name)
    if model._grad_names:
        _AllReduceBlobs(list(reversed(model._grad_names)), devices, model, model.net, rendezvous,
                        max_concurrent_distributed_ops)
    else:
        log.info("NOTE: Param builder function did not create any parameters.")

    all_params = set(model.GetParams(""))
    if model._shared_model:
        _PruneParametersForSharing(model)
    if param_update_builder_fun is not None:
        for device in devices:
            with core.DeviceScope(core.DeviceOption(model._device_type, device)):
                with core.NameScope(f"{model._device_prefix}_{device}"):
                    param_update_builder_fun(model)
    else:
        model._optimizer = optimizer_builder_fun(model)
    if model._shared_model:
        _RemapParameterBlobsForSharedModel(model, all_params)

    sync_blobs, sync_names = _ComputeBlobsToSync(model)
    model._device_grouped_blobs.update(_GroupByDevice(model, devices, sync_blobs, []))
    arg = model.Proto().arg.add()
    arg.name = "first_iter_only_one_worker"
    arg.i = 1
    _SyncAllParams(devices, model, model.param_init_net, model.param_init_net, rendezvous, sync_names,
                   max_concurrent_distributed_ops=1)
    if post_sync_builder_fun is not None:
        for device in devices:
            with core.DeviceScope(core.DeviceOption(model._device_type, device)):
                with core.NameScope(f"{model._device_prefix}_{device}"):
                    post_sync_builder_fun(model)
    model._data_parallel_model_init_nets = [model.param_init_net]
    model._data_parallel_model_nets = [model.net]
    _AddBarrierToModelNets(model, barrier_net_timeout_sec)


def _AddGradientOperators(devices: list, model: ModelHelper, losses_by_device: dict) -> None:
    loss_grad = {}
    for device in devices:
        with core.DeviceScope(core.DeviceOption(model._device_type, device)):
            for loss in losses_by_device[device]:
                loss_grad[str(loss)] = str(model.ConstantFill(loss, str(loss) + "_grad", value=1.0))
    model.AddGradientOperators(loss_grad)


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------
def CreateNet(model: ModelHelper, overwrite: bool = False) -> None:
    for net in model._data_parallel_model_nets:
        workspace.CreateNet(net[0] if isinstance(net, tuple) else net, overwrite=overwrite)


def RunInitNet(model: ModelHelper) -> None:
    """Run the init nets (initializers, common worlds, the broadcast from rank 0) and create the nets."""
    for init_net in model._data_parallel_model_init_nets:
        workspace.RunNetOnce(init_net)
    CreateNet(model)


def RunNet(model: ModelHelper, num_iterations: int) -> None:
    """Run the barrier net (when distributed), then the training net ``num_iterations`` times."""
    for net in model._data_parallel_model_nets:
        if isinstance(net, tuple):
            workspace.RunNet(net[0].Proto().name, net[1])
        else:
            workspace.RunNet(net, num_iterations if net is model.net else 1)


def _AddBarrierToModelNets(model: ModelHelper, barrier_net_timeout_sec: int) -> None:
    # Caffe2 did this for Gloo only; MPI has a barrier too. It lets a shard that starts an epoch
    # sooner wait for slower ones under the longer barrier timeout instead of the collectives'.
    if not _distributed(model):
        return
    model._barrier_init_net = core.Net("barrier_init_net")
    model._barrier_net = _CreateBarrierNet(model, model._barrier_init_net, "pre_training", barrier_net_timeout_sec)
    model._data_parallel_model_init_nets.insert(0, model._barrier_init_net)
    model._data_parallel_model_nets.insert(0, model._barrier_net)


def _CreateBarrierNet(model: ModelHelper, init_net: core.Net, name_prefix: str, timeout_sec: int) -> core.Net:
    cw = _CreateOrCloneCommonWorld(init_net, name_prefix + "_barrier_cw", rendezvous=model._rendezvous,
                                   timeout_sec=timeout_sec)
    barrier_net = core.Net(name_prefix + "_barrier_net")
    barrier_net.Barrier(inputs=[cw], outputs=[], engine=model._rendezvous["engine"])
    return barrier_net


def Synchronize(model: ModelHelper, timeout_sec: int = _DEFAULT_BARRIER_NET_TIMEOUT_SEC) -> None:
    """Wait for every shard (a barrier); a no-op on a single shard."""
    if not _distributed(model):
        return
    if model._sync_barrier_net is None:
        init = core.Net("sync_barrier_init_net")
        model._sync_barrier_net = _CreateBarrierNet(model, init, "sync", timeout_sec)
        workspace.RunNetOnce(init)
        workspace.CreateNet(model._sync_barrier_net)
    workspace.RunNet(model._sync_barrier_net)


# --------------------------------------------------------------------------------------------
# Checkpoints and learning rates
# --------------------------------------------------------------------------------------------
def GetCheckpointParams(model: ModelHelper) -> set:
    """The blobs a complete checkpoint needs: the first device's synced blobs (parameters, momenta,
    the iteration counter made in a device scope) and un-scoped iteration blobs."""
    all_blobs, _ = _ComputeBlobsToSync(model)
    first = f"{model._device_prefix}_{model._devices[0]}/"
    blobs = {b for b in all_blobs if str(b).startswith(first)}
    for op in model.net.Proto().op:
        if op.type in ("Iter", "AtomicIter") and not op.output[0].startswith(f"{model._device_prefix}_"):
            blobs.add(core.BlobReference(op.output[0]))
    return blobs


def FinalizeAfterCheckpoint(model: ModelHelper, blobs: Iterable[Any] | None = None) -> None:
    """After loading a checkpoint (on rank 0 at least, into the first device): copy it to every
    device and broadcast it from rank 0 to every shard, so all copies start identical again."""
    if not hasattr(model, "_checkpoint_net"):
        if blobs is None:
            _, names = _ComputeBlobsToSync(model)
        else:
            names = [stripBlobName(b) for b in blobs]
        for name in names:
            if name not in model._device_grouped_blobs:
                model._device_grouped_blobs[name] = {
                    d: core.BlobReference(f"{model._device_prefix}_{d}{_SEP}{name}") for d in model._devices}
        model._checkpoint_net = core.Net("checkpoint_sync_net")
        init_net = core.Net("checkpoint_init_net") if _distributed(model) else None
        _SyncAllParams(model._devices, model, init_net, model._checkpoint_net, model._rendezvous, names,
                       max_concurrent_distributed_ops=1)
        if init_net is not None:
            # Un-scoped iteration counters (an optimizer's, made once per process) are not in any
            # device's group, but a resumed learning-rate schedule needs rank 0's value everywhere.
            prefix = f"{model._device_prefix}_"
            for blob in sorted(str(b) for b in GetCheckpointParams(model) if not str(b).startswith(prefix)):
                cw, control = model._broadcast_context.get_control_and_context([blob])
                model._checkpoint_net.Broadcast([cw, blob], [blob], name=blob, engine=model._rendezvous["engine"],
                                                control_input=control)
            workspace.RunNetOnce(init_net)
        workspace.CreateNet(model._checkpoint_net)
    workspace.RunNet(model._checkpoint_net.Proto().name)


def GetLearningRateBlobNames(model: ModelHelper) -> list:
    """The learning-rate blobs of the model's optimizer (or of its LearningRate ops)."""
    optimizer = getattr(model, "_optimizer", None)
    if optimizer is not None and hasattr(optimizer, "get_cpu_blob_name"):
        if model._device_type == caffe2_pb2.CPU:
            return [optimizer.get_cpu_blob_name("lr")]
        return [optimizer.get_gpu_blob_name("lr", d, "") for d in model._devices]
    return [op.output[0] for op in model.net.Proto().op if op.type == "LearningRate"]


def ExtractPredictorNet(model: ModelHelper, inputs: list, outputs: list, device: Any) -> tuple:
    """(predict net, parameter blobs) of the first device's copy, with un-prefixed input/output names."""
    prefix = f"{model._device_prefix}_{model._devices[0]}/"
    pin = [prefix + str(b) for b in inputs]
    pout = [prefix + str(b) for b in outputs]
    return _extract_predictor_net(net_proto=model.net.Proto(), input_blobs=pin, output_blobs=pout, device=device,
                                  renames={a: b for a, b in zip(pin + pout, list(inputs) + list(outputs))})


def AddBlobSync(model: ModelHelper, blobs: Iterable[str], net: core.Net | None = None) -> None:
    """Broadcast un-prefixed blobs ``blobs`` from the first device of rank 0 to every copy, in ``net``."""
    blobs = list(blobs)
    if not blobs:
        return
    net = model.net if net is None else net
    for b in blobs:
        if b.startswith(model._device_prefix):
            raise ValueError(f"Provide unprefixed blob name: {b}")
        model._device_grouped_blobs[b] = {
            d: core.BlobReference(f"{model._device_prefix}_{d}/{b}") for d in model._devices}
    _SyncAllParams(model._devices, model, model.param_init_net, net, model._rendezvous, set(blobs))


def AddDistributedBlobSync(model: ModelHelper, blobs: list) -> None:
    """Sum ``blobs`` across shards (not across local devices), in place, every iteration."""
    if model._rendezvous is None:
        return
    cw = _CreateOrCloneCommonWorld(model.param_init_net, "blob_sync_cw_" + "_".join(str(b) for b in blobs),
                                   rendezvous=model._rendezvous)
    model.net.Allreduce(inputs=[cw] + list(blobs), outputs=list(blobs), engine=model._rendezvous["engine"])


# --------------------------------------------------------------------------------------------
# Collectives in the nets
# --------------------------------------------------------------------------------------------
def _CreateOrCloneCommonWorld(net: core.Net, common_world_blob: str, rendezvous: dict, name: str | None = None,
                              timeout_sec: int | None = None) -> core.BlobReference:
    """A CreateCommonWorld in ``net``, or a CloneCommonWorld of one already there with the same timeout."""
    timeout_ms = (_DEFAULT_TIMEOUT_SEC if timeout_sec is None else timeout_sec) * 1000
    existing = None
    for op in net.Proto().op:
        if op.type == "CreateCommonWorld":
            op_timeout = next((a.i for a in op.arg if a.name == "timeout_ms"), -1)
            if op_timeout == timeout_ms:
                existing = op.output[0]
                break
    name = name or f"{common_world_blob}_op"
    if existing is not None:
        return net.CloneCommonWorld([existing], common_world_blob, name=name, engine=rendezvous["engine"])
    extra = {k: rendezvous[k] for k in ("transport", "interface") if k in rendezvous}
    store = rendezvous.get("kv_handler")
    return net.CreateCommonWorld([store] if store else [], common_world_blob, name=name,
                                 size=rendezvous["num_shards"], rank=rendezvous["shard_id"],
                                 engine=rendezvous["engine"], timeout_ms=timeout_ms, **extra)


class CollectivesConcurrencyControl:
    """Up to ``max_concurrent_context`` common worlds used in turn, each collective ordered after the
    previous one on its world by a control input (Caffe2's scheme; MPI runs them in net order)."""

    def __init__(self, name: str, max_concurrent_context: int, param_init_net: core.Net, rendezvous: dict):
        self.name = name
        self.param_init_net = param_init_net
        self.max_concurrent_context = max_concurrent_context
        self.counter = 0
        self.common_worlds: list = []
        self.control_inputs: list = []
        self.rendezvous = rendezvous

    def get_control_and_context(self, control_output_blob: Any) -> tuple[Any, Any]:
        slot = self.counter % self.max_concurrent_context
        control_input = None
        if len(self.common_worlds) < self.max_concurrent_context:
            cw = _CreateOrCloneCommonWorld(self.param_init_net, f"{self.name}_{slot}_cw", rendezvous=self.rendezvous)
            self.common_worlds.append(cw)
            self.control_inputs.append(control_output_blob)
        else:
            cw = self.common_worlds[slot]
            control_input = self.control_inputs[slot]
            self.control_inputs[slot] = control_output_blob
        self.counter += 1
        return cw, control_input


def _Broadcast(devices: list, model: ModelHelper, net: core.Net, param: str) -> None:
    """Copy the first device's blob to the other local devices."""
    master = devices[0]
    group = model._device_grouped_blobs[param]
    for d in devices[1:]:
        if d not in group:
            continue   # a shared parameter has one copy
        with core.DeviceScope(core.DeviceOption(model._device_type, d)):
            net.Copy(group[master], group[d])


def _AllReduceBlobs(blob_names: list, devices: list, model: ModelHelper, net: core.Net, rendezvous: dict | None,
                    max_concurrent_distributed_ops: int) -> None:
    if rendezvous is None or rendezvous["num_shards"] <= 1:
        if len(devices) == 1:
            return
        for name in blob_names:
            group = list(model._device_grouped_blobs[name].values())
            if isinstance(group[0], core.GradientSlice):
                raise ValueError(f"gradient of {name!r} is sparse (a GradientSlice): synchronizing gradient "
                                 f"slices is not supported (as in Caffe2 on CPU)")
            with core.DeviceScope(core.DeviceOption(model._device_type, devices[0])):
                net.Sum(group, [group[0]], name="dpm")
            if not model._shared_model:   # shared: only the first copy's gradient updates the parameter
                _Broadcast(devices, model, net, name)
        return
    context = CollectivesConcurrencyControl("allreduce", max_concurrent_distributed_ops, model.param_init_net,
                                            rendezvous)
    for k, name in enumerate(blob_names):
        group = list(model._device_grouped_blobs[name].values())
        if isinstance(group[0], core.GradientSlice):
            raise ValueError(f"gradient of {name!r} is sparse (a GradientSlice): data_parallel_model all-reduces "
                             f"dense gradients only (as Caffe2 did on CPU); make the gradient dense")
        # One Allreduce sums the local copies and the shards and writes the sum back into every copy.
        # All but the last only start theirs (netjit_async): the last waits for the whole group, so a
        # step meets the other ranks once, not once per gradient.
        extra = {"netjit_async": 1} if k < len(blob_names) - 1 else {}
        with core.DeviceScope(core.DeviceOption(model._device_type, devices[0])):
            cw, control_input = context.get_control_and_context(group[0])
            net.Allreduce(inputs=[cw] + group, outputs=group, name=name, engine=rendezvous["engine"],
                          control_input=control_input, **extra)


def _SyncAllParams(devices: list, model: ModelHelper, init_net: core.Net | None, net: core.Net,
                   rendezvous: dict | None, unique_param_names: Iterable[str],
                   max_concurrent_distributed_ops: int = 4) -> None:
    if rendezvous is None or rendezvous["num_shards"] <= 1:
        for name in unique_param_names:
            _Broadcast(devices, model, net, name)
        return
    if model._broadcast_context is None:
        model._broadcast_context = CollectivesConcurrencyControl("broadcast", max_concurrent_distributed_ops,
                                                                 init_net, rendezvous)
    context = model._broadcast_context
    if init_net is not None:
        context.param_init_net = init_net
    for name in sorted(unique_param_names):
        group = list(model._device_grouped_blobs[name].values())
        cw, control_input = context.get_control_and_context(group)
        # Rank 0's first copy goes to every copy on every rank.
        net.Broadcast(inputs=[cw] + group, outputs=group, name=name, engine=rendezvous["engine"],
                      control_input=control_input)


# --------------------------------------------------------------------------------------------
# Blob bookkeeping
# --------------------------------------------------------------------------------------------
def _PruneParametersForSharing(model: ModelHelper) -> None:
    """Keep only the first device's parameters, so update ops are made for them alone."""
    master = f"{model._device_prefix}_{model._devices[0]}/"
    model.params = model.GetParams(master)
    kept = {str(p) for p in model.params}
    model.param_to_grad = {p: g for p, g in model.param_to_grad.items() if str(p) in kept}
    model.weights = [w for w in model.weights if str(w) in kept]
    model.biases = [b for b in model.biases if str(b) in kept]


def _RemapParameterBlobsForSharedModel(model: ModelHelper, all_params: set) -> None:
    """Drop the initializers of the other devices' parameter copies and point their readers at the
    first device's copy; the groups of those parameters keep the first copy only."""
    master = f"{model._device_prefix}_{model._devices[0]}/"
    all_names = {str(p) for p in all_params}
    masters = {str(p) for p in model.GetParams()}
    others = all_names - masters

    def remap(net: core.Net) -> None:
        proto = net.Proto()
        ops = [op for op in proto.op if not set(op.output) & others]
        for op in ops:
            op.input[:] = [master + stripBlobName(b) if b in others else b for b in op.input]
        del proto.op[:]
        proto.op.extend(ops)
    remap(model.param_init_net)
    remap(model.net)
    for name in {stripBlobName(b) for b in others}:
        group = model._device_grouped_blobs.get(name)
        if group is not None:
            model._device_grouped_blobs[name] = {model._devices[0]: group[model._devices[0]]}


def stripBlobName(param: Any) -> str:
    """``"cpu_0/conv1_w"`` -> ``"conv1_w"`` (everything after the first name-scope separator)."""
    if isinstance(param, core.GradientSlice):
        return stripBlobName(param.indices) + ":" + stripBlobName(param.values)
    name = str(param)
    return name[name.index(_SEP) + 1:]


def _GroupByDevice(model: ModelHelper, devices: list, params: list, non_data_params: list) -> OrderedDict:
    """{stripped name: {device: blob}} for the data-parallel blobs of ``params``, in their order."""
    grouped: OrderedDict = OrderedDict()
    for p in params[len(non_data_params):]:
        ref = p.indices if isinstance(p, core.GradientSlice) else p
        if not isinstance(ref, core.BlobReference):
            raise TypeError(f"Param {p} is not a BlobReference or GradientSlice")
        ns = ref.GetNameScope()
        head = ns.split(_SEP)[0]
        prefix = f"{model._device_prefix}_"
        if not head.startswith(prefix) or not head[len(prefix):].isdigit():
            raise ValueError(f"Param {p} expected to have a name scope '{prefix}<device>/'")
        grouped.setdefault(stripBlobName(p), {})[int(head[len(prefix):])] = p
    return grouped


def _ValidateParams(params: list) -> None:
    names = [str(p) for p in params]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"Duplicate entries in params: {dupes}")


def _ComputeBlobsToSync(model: ModelHelper) -> tuple[list, list]:
    """Every blob the param init net makes in a device scope (parameters, momenta, ITER), sorted by
    device then name, and their stripped names."""
    prefix = f"{model._device_prefix}_"
    blobs: set[str] = set()
    for op in model.param_init_net.Proto().op:
        blobs.update(o for o in op.output if o.startswith(prefix))
    names = {stripBlobName(b) for b in blobs}
    missing = set(model._param_names) - names
    if missing:
        raise ValueError(f"Some params not instantiated in param init net: {sorted(missing)}")

    def key(b: str) -> tuple[int, str]:
        return int(b[len(prefix):b.index(_SEP)]), b
    return [core.BlobReference(b) for b in sorted(blobs, key=key)], sorted(names)


def ConvertNetForDevice(net: core.Net, device: Any = None) -> core.Net:
    """A copy of ``net`` with every blob in the device's name scope (``cpu_0/x``) and its device option."""
    mnet = copy.deepcopy(net)
    device = scope.CurrentDeviceScope() if device is None else device
    prefix = "gpu" if device.device_type == caffe2_pb2.CUDA else "cpu"
    ns = f"{prefix}_{device.cuda_gpu_id}/"
    proto = mnet.Proto()
    for op in proto.op:
        op.input[:] = [ns + b for b in op.input]
        op.output[:] = [ns + b for b in op.output]
        op.control_input[:] = [ns + b for b in op.control_input]
        op.device_option.CopyFrom(device)
    proto.external_input[:] = [ns + b for b in proto.external_input]
    proto.external_output[:] = [ns + b for b in proto.external_output]
    return mnet
