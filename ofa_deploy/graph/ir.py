"""Graph nodes and the builder from operator specs (with random or real weights)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ofa_deploy.space.geometry import se_channels
from ofa_deploy.space.ops import BLOCK, FEATURE_MIX, FINAL_EXPAND, FIRST_CONV, LOGITS, POOL, OpSpec


@dataclass
class Conv:
    """A same-padded convolution, BatchNorm folded into ``weight`` and ``bias`` (or None), then ``act`` if any."""

    input: str
    output: str
    weight: np.ndarray  # (out, in / groups, k, k)
    bias: np.ndarray | None
    stride: int = 1
    groups: int = 1
    act: str | None = None  # None, "relu" or "h_swish"

    @property
    def kernel_size(self) -> int:
        return int(self.weight.shape[-1])


@dataclass
class SqueezeExcite:
    """x * h_sigmoid(W2 relu(W1 mean(x) + b1) + b2)."""

    input: str
    output: str
    reduce_weight: np.ndarray  # (se, C, 1, 1)
    reduce_bias: np.ndarray
    expand_weight: np.ndarray  # (C, se, 1, 1)
    expand_bias: np.ndarray


@dataclass
class Add:
    """Element-wise ``a + b``: a block's residual connection."""

    a: str
    b: str
    output: str


@dataclass
class GlobalAvgPool:
    """Mean over height and width, keeping (N, C, 1, 1)."""

    input: str
    output: str


@dataclass
class Linear:
    """Flatten (N, C, 1, 1) then a fully connected layer."""

    input: str
    output: str
    weight: np.ndarray  # (out, in)
    bias: np.ndarray


Node = Conv | SqueezeExcite | Add | GlobalAvgPool | Linear


@dataclass
class Graph:
    """A model as a chain of nodes from one NCHW input to one output: an operator alone or a whole network."""

    input_name: str
    input_shape: tuple[int, ...]  # NCHW
    output_name: str
    output_shape: tuple[int, ...]
    nodes: list[Node] = field(default_factory=list)
    op_keys: list[str] = field(default_factory=list)  # the LUT key of each operator built into it, in order


# ---------------------------------------------------------------------- weights


@dataclass
class ConvWeights:
    """A convolution's (or the classifier's) weight and bias, as a weight source gives them."""

    weight: np.ndarray
    bias: np.ndarray | None


@dataclass
class BlockWeights:
    """The weights of one block: expand (None at expand ratio 1), depthwise, SE (W1, b1, W2, b2; or None), project."""

    expand: ConvWeights | None
    depthwise: ConvWeights
    se: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None
    project: ConvWeights


OpWeights = ConvWeights | BlockWeights | None
WeightSource = Callable[[int, OpSpec], OpWeights]


def random_weights(seed: int = 0) -> WeightSource:
    """Shape-correct random weights (latency does not depend on values; these avoid denormals)."""
    rng = np.random.default_rng(seed)

    def conv(out_c: int, in_c: int, k: int, bias: bool = True) -> ConvWeights:
        w = rng.standard_normal((out_c, in_c, k, k), dtype=np.float32) * np.float32((in_c * k * k) ** -0.5)
        return ConvWeights(w, rng.standard_normal(out_c, dtype=np.float32) * 0.1 if bias else None)

    def source(_: int, op: OpSpec) -> OpWeights:
        c_in, c_out = op.input_shape[-1], op.output_shape[-1]
        if op.kind in (FIRST_CONV, FINAL_EXPAND):
            return conv(c_out, c_in, 3 if op.kind == FIRST_CONV else 1)
        if op.kind == FEATURE_MIX:
            return conv(c_out, c_in, 1, bias=False)
        if op.kind == LOGITS:
            w = conv(c_out, c_in, 1)
            return ConvWeights(w.weight[:, :, 0, 0], w.bias)
        if op.kind == POOL:
            return None
        mid = op.mid
        se = None
        if op.se:
            s = se_channels(mid)
            r, e = conv(s, mid, 1), conv(mid, s, 1)
            se = (r.weight, r.bias, e.weight, e.bias)
        return BlockWeights(
            expand=None if op.expand_ratio_is_one else conv(mid, c_in, 1),
            depthwise=conv(mid, 1, op.kernel),
            se=se,
            project=conv(c_out, mid, 1),
        )

    return source


# ---------------------------------------------------------------------- builder


def _nchw(shape_hwc: Sequence[int]) -> tuple[int, ...]:
    if len(shape_hwc) == 1:
        return (1, shape_hwc[0])
    h, w, c = shape_hwc
    return (1, c, h, w)


OP_PREFIX = "op"  # tensor names start with op<index>_ (see build_graph)


def build_graph(ops: Sequence[OpSpec], weights: WeightSource | None = None) -> Graph:
    """Chain the operators into one graph: one op is a latency model, all ops of an arch a network."""
    weights = weights or random_weights()
    graph = Graph("input", _nchw(ops[0].input_shape), "", (), op_keys=[op.key for op in ops])
    current = graph.input_name
    counter = 0
    index = 0

    def fresh(tag: str) -> str:
        """A tensor name that says which operator it belongs to (``op3_expand_12``): runtimes name their
        profiled nodes after these, which is how a profile is mapped back to the LUT's operators."""
        nonlocal counter
        counter += 1
        return f"{OP_PREFIX}{index}_{tag}_{counter}"

    for index, op in enumerate(ops):
        w = weights(index, op)
        if op.kind in (FIRST_CONV, FINAL_EXPAND, FEATURE_MIX):
            out = fresh(op.kind.lower())
            stride = 2 if op.kind == FIRST_CONV else 1
            graph.nodes.append(Conv(current, out, w.weight, w.bias, stride=stride, act="h_swish"))
        elif op.kind == POOL:
            out = fresh("pool")
            graph.nodes.append(GlobalAvgPool(current, out))
        elif op.kind == LOGITS:
            out = fresh("logits")
            graph.nodes.append(Linear(current, out, w.weight, w.bias))
        elif op.kind == BLOCK:
            out = _append_block(graph, op, w, current, fresh)
        else:
            raise ValueError(f"unknown operator kind {op.kind!r}")
        current = out
    graph.output_name = current
    graph.output_shape = _nchw(ops[-1].output_shape)
    if isinstance(graph.nodes[-1], Linear):  # the classes of the weights (a supernet trained on other data)
        graph.output_shape = (1, graph.nodes[-1].weight.shape[0])
    return graph


def _append_block(graph: Graph, op: OpSpec, w: BlockWeights, x: str, fresh) -> str:
    act = "h_swish" if op.hs else "relu"
    y = x
    if w.expand is not None:
        y_next = fresh("expand")
        graph.nodes.append(Conv(y, y_next, w.expand.weight, w.expand.bias, act=act))
        y = y_next
    y_next = fresh("depthwise")
    graph.nodes.append(Conv(y, y_next, w.depthwise.weight, w.depthwise.bias, stride=op.stride, groups=op.mid, act=act))
    y = y_next
    if w.se is not None:
        y_next = fresh("se")
        graph.nodes.append(SqueezeExcite(y, y_next, *w.se))
        y = y_next
    y_next = fresh("project")
    graph.nodes.append(Conv(y, y_next, w.project.weight, w.project.bias, act=None))
    y = y_next
    if op.idskip:
        y_next = fresh("add")
        graph.nodes.append(Add(y, x, y_next))
        y = y_next
    return y
