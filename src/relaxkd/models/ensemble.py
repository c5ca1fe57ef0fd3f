"""Frozen teacher ensembles evaluated as one batched computation."""
from __future__ import annotations

import copy
import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.func import functional_call, stack_module_state
from torch.fx.experimental.optimization import fuse as fuse_batch_norms


def _same_architecture(models: Sequence[nn.Module]) -> bool:
    def signature(model: nn.Module):
        return type(model), [
            (key, value.shape, value.dtype) for key, value in model.state_dict(keep_vars=True).items()
        ]

    first = signature(models[0])
    return all(signature(model) == first for model in models[1:])


# --- fusion: T same-architecture networks as one network, members side by side along channels --


class _GroupedLinear(nn.Module):
    """T Linear layers on ``[B, T·F]`` (member-major features) -> ``[B, T·O]``: one batched matmul."""

    def __init__(self, linears: Sequence[nn.Linear]):
        super().__init__()
        self.members = len(linears)
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in linears]), requires_grad=False)
        bias = [layer.bias for layer in linears]
        self.bias = None if bias[0] is None else nn.Parameter(torch.stack([b.detach() for b in bias]), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        x = x.reshape(batch, self.members, -1).transpose(0, 1)  # [T, B, F]
        y = torch.bmm(x, self.weight.transpose(1, 2))
        if self.bias is not None:
            y = y + self.bias.unsqueeze(1)
        return y.transpose(0, 1).reshape(batch, -1)


class _MembersConv2d(nn.Conv2d):
    """A convolution holding T members' layers side by side (``groups = T``, member-major channels).

    On CPU, oneDNN's grouped convolution is slow on the tiny maps deep layers see at CIFAR's 32 px
    (2 cores, ResNet50 ×3, batch 16: a 1×1 conv on 1×1 maps 15.4 ms vs 2.1 ms as a batched matmul;
    the stride-2 3×3 from 2×2 to 1×1 29.9 ms vs ~3). There the same products run as one
    ``baddbmm`` over members: a 1×1 conv when the output has at most 256 positions (over that the
    grouped conv was as fast or faster), and any conv with a 1×1 output, using only the kernel
    taps that overlap the input (a 3×3 conv on a 1×1 map is its centre tap). The choice depends
    only on shapes, so results are deterministic; elsewhere (GPUs, larger maps) the conv runs.
    """

    members: int
    _MATMUL_ROWS = 256

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, members: int) -> _MembersConv2d:
        fused = cls.__new__(cls)
        fused.__dict__.update(conv.__dict__)  # same parameters, hooks and hyper-parameters
        fused.members = members
        fused._window_weights = {}
        return fused

    def _apply(self, fn, recurse=True):
        self._window_weights = {}  # derived from the weights: rebuilt after any move or cast
        return super()._apply(fn, recurse)

    def forward(self, x: Tensor) -> Tensor:
        if x.is_cpu and x.dim() == 4 and self.groups == self.members and self.padding_mode == "zeros" \
                and self.dilation == (1, 1) and not isinstance(self.padding, str):
            y = self._as_matmul(x)
            if y is not None:
                return y
        return super().forward(x)

    def _as_matmul(self, x: Tensor) -> Tensor | None:
        batch, _, height, width = x.shape
        members, out = self.members, self.out_channels // self.members
        (k_h, k_w), (s_h, s_w), (p_h, p_w) = self.kernel_size, self.stride, self.padding
        out_h, out_w = (height + 2 * p_h - k_h) // s_h + 1, (width + 2 * p_w - k_w) // s_w + 1
        bias = None if self.bias is None else self.bias.view(members, 1, out)
        if (k_h, k_w, p_h, p_w) == (1, 1, 0, 0) and batch * out_h * out_w <= self._MATMUL_ROWS:
            x = x[:, :, ::s_h, ::s_w]
            rows = x.permute(0, 2, 3, 1).reshape(batch * out_h * out_w, members, -1).transpose(0, 1)
            weight = self.weight.view(members, out, -1).transpose(1, 2)  # [T, C, O], a view
            y = torch.bmm(rows, weight) if bias is None else torch.baddbmm(bias, rows, weight)
            return y.transpose(0, 1).reshape(batch, out_h, out_w, -1).permute(0, 3, 1, 2)
        if (out_h, out_w) != (1, 1):
            return None
        # one output position: input rows/cols [0, h) meet kernel taps [p, p + h)
        h, w = min(height, k_h - p_h), min(width, k_w - p_w)
        weight = self._window_weights.get((h, w))
        if weight is None:
            window = self.weight[:, :, p_h:p_h + h, p_w:p_w + w]
            weight = window.reshape(members, out, -1).transpose(1, 2).contiguous()  # [T, C·h·w, O]
            self._window_weights[(h, w)] = weight
        rows = x[:, :, :h, :w].reshape(batch, members, -1).transpose(0, 1)  # [T, B, C·h·w]
        y = torch.bmm(rows, weight) if bias is None else torch.baddbmm(bias, rows, weight)
        return y.transpose(0, 1).reshape(batch, -1, 1, 1)


def _cat(tensors) -> Tensor | None:
    return None if tensors[0] is None else torch.cat([t.detach() for t in tensors])


def _fuse_layer(layers: Sequence[nn.Module], shared_input: bool) -> nn.Module:
    """One layer computing all members' layers; ``shared_input``: it reads the ensemble's input."""
    layer, count = layers[0], len(layers)
    if isinstance(layer, nn.Conv2d):
        # on the shared input: one dense conv with every member's filters; later: groups × T
        scale = 1 if shared_input else count
        fused = nn.Conv2d(
            layer.in_channels * scale, layer.out_channels * count, layer.kernel_size, layer.stride, layer.padding,
            layer.dilation, layer.groups * scale, layer.bias is not None, layer.padding_mode, device="meta",
        )
        fused.weight = nn.Parameter(_cat([m.weight for m in layers]), requires_grad=False)
        fused.bias = None if layer.bias is None else nn.Parameter(_cat([m.bias for m in layers]), requires_grad=False)
        return fused
    if isinstance(layer, nn.Linear):
        if shared_input:
            fused = nn.Linear(layer.in_features, layer.out_features * count, layer.bias is not None, device="meta")
            fused.weight = nn.Parameter(_cat([m.weight for m in layers]), requires_grad=False)
            fused.bias = None if layer.bias is None else nn.Parameter(_cat([m.bias for m in layers]), requires_grad=False)
            return fused
        return _GroupedLinear(layers)
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) and layer.track_running_stats and not shared_input:
        fused = type(layer)(layer.num_features * count, eps=layer.eps, affine=layer.affine, device="meta")
        if layer.affine:
            fused.weight = nn.Parameter(_cat([m.weight for m in layers]), requires_grad=False)
            fused.bias = nn.Parameter(_cat([m.bias for m in layers]), requires_grad=False)
        fused.running_mean = _cat([m.running_mean for m in layers])
        fused.running_var = _cat([m.running_var for m in layers])
        fused.num_batches_tracked = layer.num_batches_tracked.detach().clone()
        return fused.eval()
    if isinstance(layer, _CHANNELWISE) and not shared_input:
        return copy.deepcopy(layer)
    if isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) == (1, -1) and not shared_input:
        return copy.deepcopy(layer)  # see _flattens_from_dim1
    raise _NotFusable(type(layer).__name__)


#: layers acting on each channel (or spatial position) alone: valid on member-major channels
_CHANNELWISE = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Hardswish, nn.Identity, nn.Dropout,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)
_CHANNELWISE_FUNCTIONS = {operator.add, operator.iadd, operator.mul, torch.add, torch.relu, F.relu, torch.sigmoid}
_CHANNELWISE_METHODS = {"relu", "relu_", "add", "add_", "sigmoid"}


class _NotFusable(Exception):
    pass


def _flattens_from_dim1(node: fx.Node) -> bool:
    # flatten(x, 1) of member-major [B, T·C, H, W] keeps each member's block contiguous
    start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
    end = node.kwargs.get("end_dim", node.args[2] if len(node.args) > 2 else -1)
    return start == 1 and end == -1


def _fuse(teachers: Sequence[nn.Module]) -> fx.GraphModule:
    """Traces the first teacher and swaps every layer for its all-members version.

    Activations carry the T members side by side along dim 1 (member-major), so element-wise
    ops, pooling, residual additions and ``flatten(x, 1)`` apply unchanged. Raises
    :class:`_NotFusable` for anything else (the ensemble then uses vmap).
    """
    try:
        graph_module = fx.symbolic_trace(copy.deepcopy(teachers[0]))
    except Exception as error:  # untraceable control flow
        raise _NotFusable(str(error)) from None
    tables = [dict(teacher.named_modules()) for teacher in teachers]
    root = nn.Module()
    member_convs = []  # convolutions over member-major channels (not the shared input's)
    placeholders = [node for node in graph_module.graph.nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        raise _NotFusable("teachers must take one input")
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            shared = placeholders[0] in node.all_input_nodes
            name = f"layer{len(root._modules)}"
            root.add_module(name, _fuse_layer([table[node.target] for table in tables], shared))
            node.target = name
            if isinstance(root._modules[name], nn.Conv2d) and not shared:
                member_convs.append(name)
        elif node.op == "call_function":
            if placeholders[0] in node.all_input_nodes:
                raise _NotFusable("the input feeds a function")
            if node.target is torch.flatten:
                if not _flattens_from_dim1(node):
                    raise _NotFusable("flatten not from dim 1")
            elif node.target not in _CHANNELWISE_FUNCTIONS:
                raise _NotFusable(str(node.target))
        elif node.op == "call_method":
            if placeholders[0] in node.all_input_nodes:
                raise _NotFusable("the input feeds a method")
            if node.target == "flatten":
                if not _flattens_from_dim1(node):
                    raise _NotFusable("flatten not from dim 1")
            elif node.target not in _CHANNELWISE_METHODS:
                raise _NotFusable(str(node.target))
        elif node.op == "get_attr":
            raise _NotFusable("direct parameter access")
    if len(placeholders[0].users) != 1:
        raise _NotFusable("the input feeds more than one layer")
    fused = _fold_batch_norms(fx.GraphModule(root, graph_module.graph).eval())
    for name in member_convs:  # after folding: torch's BatchNorm folding matches exact nn.Conv2d
        setattr(fused, name, _MembersConv2d.from_conv(getattr(fused, name), len(teachers)))
    return fused.requires_grad_(False)


def _fold_batch_norms(network: fx.GraphModule) -> fx.GraphModule:
    """Folds each eval-mode BatchNorm into the convolution (or Linear) that feeds it.

    Exact up to rounding for frozen inference: ``conv(x)·s + t`` with ``s = γ/√(σ²+ε)``,
    ``t = β - μ·s`` is a conv with weights ``w·s`` and bias ``(b - μ)·s + β`` (torch's
    ``fuse_conv_bn_eval``, applied over the fx graph). It removes one full pass over every
    activation map (measured on 2 CPU cores: ResNet50 ×3, 32 px, 1.3-1.5× faster than unfolded).
    The new weights are computed in float64 and rounded once to the network's dtype.
    """
    dtypes = {tensor.dtype for tensor in [*network.parameters(), *network.buffers()] if tensor.is_floating_point()}
    dtype = dtypes.pop() if len(dtypes) == 1 else None
    if dtype is not None:
        network = network.double()
    network = fuse_batch_norms(network, inplace=True, no_trace=True)
    return network.to(dtype) if dtype is not None else network


#: ``auto``: fused where the layers allow, else vmap; mixed architectures always loop
STRATEGIES = ("auto", "fused", "vmap", "loop")


class TeacherEnsemble(nn.Module):
    """Frozen, always-eval teachers; ``forward(x)`` returns logits ``[T, B, C]``.

    Same-architecture teachers are fused into one network (traced with ``torch.fx``) whose layers
    hold all T members side by side: the first layer's filters are concatenated (one dense conv on
    the shared input), later convolutions become grouped convolutions (``groups × T``), BatchNorm
    statistics are concatenated and folded into the convolutions (exact for frozen eval-mode
    teachers), and each Linear becomes one batched matmul. The fused network runs channels_last;
    on CPU, member convolutions over tiny maps run as batched matmuls (:class:`_MembersConv2d`).
    Measured (BENCHMARKS.md, ``ensemble_speedup``): ResNet50 ×3 at 32 px on 2 CPU cores ~1.7× the
    loop over members, tiny CNNs ~1.4×; on an H200 2×. A ``torch.func`` vmap over stacked weights
    (``strategy="vmap"``, the fallback for layers the fusion does not know) was slower than the
    loop in every case measured. Mixed architectures run as a loop.

    The teachers' weights are not part of this module's ``state_dict`` (they live in their own
    artifacts) and get no gradients, but ``.to()``/``.cuda()``/``.half()`` move them.
    ``input_stats`` lists each teacher's input statistics name (None where a teacher does not say).
    """

    def __init__(self, teachers: Sequence[nn.Module], strategy: str = "auto", compiled: bool = False):
        super().__init__()
        #: run the fused network through torch.compile with inductor's freezing (weights become
        #: constants, BatchNorm/ReLU/adds fused into prepacked convolutions): 2.1-2.3× the loop for
        #: ResNet50 ×3 on 2 CPU cores (eager fused 1.7-1.9×), after a one-off compile of 7-25 s
        self.compiled = compiled
        self._compiled: tuple = ()
        if len(teachers) == 0:
            raise ValueError("TeacherEnsemble needs at least one teacher")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown ensemble strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
        teachers = [teacher.eval().requires_grad_(False) for teacher in teachers]
        self.num_teachers = len(teachers)
        self.batched = strategy != "loop" and len(teachers) > 1 and _same_architecture(teachers)
        self.input_stats = [getattr(teacher, "input_stats", None) for teacher in teachers]
        # Teacher weights are plain attributes (or inside tuples), not parameters/buffers/submodules:
        # they stay out of state_dict(), parameters() and DDP's buffer broadcast; _apply moves them.
        self._loop_teachers: list[nn.Module] = []
        self._fused: tuple[fx.GraphModule, ...] = ()
        self._stacked_params: dict[str, Tensor] = {}
        self._stacked_buffers: dict[str, Tensor] = {}
        if self.batched:
            try:
                if strategy == "vmap":
                    raise _NotFusable("vmap asked for")
                self._fused = (_fuse(teachers).to(memory_format=torch.channels_last),)
            except _NotFusable:
                params, buffers = stack_module_state(teachers)
                self._stacked_params = {name: value.detach() for name, value in params.items()}
                self._stacked_buffers = dict(buffers)
                # A weightless copy that only supplies the forward code; in a tuple so that .to()
                # never touches its meta tensors.
                self._skeleton = (copy.deepcopy(teachers[0]).to("meta").eval(),)
        else:
            self._loop_teachers = teachers
        self._compile()

    def _compile(self) -> None:
        # frozen weights are baked into the compiled code: rebuilt (lazily compiled) after .to()
        if self.compiled and self._fused:
            self._compiled = (torch.compile(self._fused[0]),)

    @property
    def strategy(self) -> str:
        """How forward runs: ``fused``, ``vmap`` or ``loop``."""
        return "fused" if self._fused else ("vmap" if self.batched else "loop")

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for fused in self._fused:
            fused._apply(fn, recurse)
        self._compile()
        self._stacked_params = {name: fn(value) for name, value in self._stacked_params.items()}
        self._stacked_buffers = {name: fn(value) for name, value in self._stacked_buffers.items()}
        for teacher in self._loop_teachers:
            teacher._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> TeacherEnsemble:
        # Teachers stay in eval mode (BatchNorm statistics, no dropout) whatever the parent does.
        super().train(mode)
        for teacher in self._loop_teachers:
            teacher.eval()
        return self

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        if self._fused:
            if x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)  # oneDNN's and cuDNN's fast layout
            if self._compiled:
                import torch._inductor.config as inductor_config  # noqa: PLC0415 - torch's compiler settings only when compiling

                # freezing is read when (re)compiling, which happens inside the call; compile(options=)
                # did not apply it here (measured: no speed-up)
                with inductor_config.patch(freezing=True):
                    logits = self._compiled[0](x)
            else:
                logits = self._fused[0](x)
            return logits.reshape(x.shape[0], self.num_teachers, -1).transpose(0, 1).contiguous()
        if not self.batched:
            return torch.stack([teacher(x) for teacher in self._loop_teachers])
        skeleton = self._skeleton[0]

        def run_one(member_params, member_buffers, inputs):
            return functional_call(skeleton, (member_params, member_buffers), (inputs,))

        return torch.vmap(run_one, in_dims=(0, 0, None))(self._stacked_params, self._stacked_buffers, x)
