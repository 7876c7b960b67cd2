"""Map a runtime's profiled node names back to the LUT operators of a network this toolkit wrote.

:func:`~ofa_deploy.graph.ir.build_graph` names every tensor after the operator it belongs to
(``op3_expand_12``), and the ONNX writer stores the operators' LUT keys in the model's properties
(``ofa_deploy.op_keys``). Runtimes name their profiled nodes after those tensors (ONNX Runtime's
``op3_expand_12_nchwc``, OpenVINO's ``op3_expand_12_conv/WithoutBiases``), so each profiled node's
time can be charged to the stem, an MBConv block or the head, and set against that LUT entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ofa_deploy.graph.ir import OP_PREFIX
from ofa_deploy.graph.onnx_writer import OP_KEYS_METADATA
from ofa_deploy.space.ops import BLOCK, OpSpec

_OP_INDEX = re.compile(rf"(?:^|[^A-Za-z0-9]){OP_PREFIX}(\d+)_")


def op_index(node_name: str) -> int | None:
    """The operator index a profiled node's name carries, or None (a node the runtime added)."""
    match = _OP_INDEX.search(node_name)
    return int(match.group(1)) if match else None


def read_op_keys(path: Path) -> list[str] | None:
    """The LUT keys an ONNX file written by this toolkit records, in operator order; None for any other file."""
    from ofa_deploy.graph.onnx_module import onnx_module

    onnx = onnx_module()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX, or unreadable: nothing to map (the runtime says what is wrong with it)
        return None
    for prop in model.metadata_props:
        if prop.key == OP_KEYS_METADATA:
            try:
                keys = json.loads(prop.value)
            except ValueError:
                return None
            return keys if isinstance(keys, list) and all(isinstance(k, str) for k in keys) else None
    return None


def describe_key(key: str) -> str:
    """A LUT key in a few words: ``block k5 e4 40x40x24 s2 se`` or ``first_conv 160x160x3``."""
    try:
        op = OpSpec.from_key(key)
    except Exception:  # a key of another format: show it as it is
        return key[:48]
    size = "x".join(map(str, op.input_shape))
    if op.kind != BLOCK:
        return f"{op.kind} {size}"
    ratio = op.mid / op.input_shape[2]
    flags = "".join([f" s{op.stride}", " se" if op.se else "", " hs" if op.hs else "", " skip" if op.idskip else ""])
    return f"block k{op.kernel} e{ratio:g} {size}{flags}"


@dataclass(frozen=True)
class OperatorShare:
    """One LUT operator of a network: the time its profiled nodes took in the network."""

    index: int
    key: str
    profiled_ms: float
    nodes: int


def charge_to_operators(
    keys: Sequence[str], rows: Sequence[tuple[str, float]], output_name: str = "output"
) -> tuple[list[OperatorShare], float, int]:
    """``(node name, mean ms)`` rows charged to the operators ``keys``: one share per operator, plus
    the time and count of nodes no operator claims (layout reorders and the like). A node named after
    the model's public output tensor (OpenVINO names the last layer so) is the last operator's."""
    totals = [0.0] * len(keys)
    counts = [0] * len(keys)
    unmapped, unmapped_count = 0.0, 0
    for name, ms in rows:
        index = len(keys) - 1 if name.split("/")[0] == output_name else op_index(name)
        if index is None or not 0 <= index < len(keys):
            unmapped += ms
            unmapped_count += 1
        else:
            totals[index] += ms
            counts[index] += 1
    shares = [OperatorShare(i, key, totals[i], counts[i]) for i, key in enumerate(keys)]
    return shares, unmapped, unmapped_count
