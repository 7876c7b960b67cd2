"""The operators of the design space (ofa_deploy/space/ops.py): the official LUT keys of every arch and resolution."""

import numpy as np
import pytest
import yaml

from ofa_deploy.space.arch import RESOLUTIONS, Arch, sample_batch
from ofa_deploy.space.ops import OpSpec, arch_ops, resolution_ops, space_ops, stage_block_ops

TUTORIAL = Arch.from_dict(
    {
        "ks": [5, 3, 3, 3, 5, 3, 3, 3, 7, 7, 3, 3, 5, 5, 7, 3, 3, 3, 5, 3],
        "e": [3, 3, 3, 3, 4, 4, 3, 3, 6, 3, 4, 3, 4, 4, 4, 3, 6, 6, 6, 3],
        "d": [2, 2, 3, 4, 3],
        "r": 192,
    }
)


@pytest.mark.parametrize("r", [160, 176, 192, 208, 224])
def test_resolution_keys_equal_official_note10_keys(reference_dir, r):
    official = set(yaml.safe_load((reference_dir / "note10" / f"{r}_lookup_table.yaml").read_text()))
    assert {op.key for op in resolution_ops(r, 1.2)} == official


def test_arch_ops_order_and_format():
    ops = arch_ops(TUTORIAL, 1.2)
    assert ops[0].key == "Conv-input:192x192x3-output:96x96x24"
    assert ops[1].key == "expanded_conv-input:96x96x24-output:96x96x24-expand:24-kernel:3-stride:1-idskip:1-se:0-hs:0"
    assert ops[2].key == "expanded_conv-input:96x96x24-output:48x48x32-expand:72-kernel:5-stride:2-idskip:0-se:0-hs:0"
    assert [op.kind for op in ops[-4:]] == ["Conv_1", "AvgPool2D", "Conv_2", "Logits"]
    assert ops[-1].key == "Logits-input:1x1x1536-output:1000"
    assert len(ops) == 1 + 1 + sum(TUTORIAL.d) + 4


def test_keys_round_trip():
    for op in resolution_ops(176, 1.0):
        assert OpSpec.from_key(op.key) == op
    with pytest.raises(ValueError):
        OpSpec.from_key("expanded_conv-input:1x1x1-output:1x1x1-expand:1-kernel:3-stride:1-idskip:2-se:0-hs:0")


def test_space_is_deduplicated_and_covers_every_arch():
    keys = [op.key for op in space_ops(1.0)]
    assert len(keys) == len(set(keys)) == 1257
    assert len(space_ops(1.2)) == 1257
    assert len(space_ops(1.0, [160])) == 96
    covered = set(keys)
    for arch in sample_batch(np.random.default_rng(0), 200, RESOLUTIONS).to_archs():
        assert {op.key for op in arch_ops(arch, 1.0)} <= covered


def test_stage_table_matches_arch_ops():
    table = stage_block_ops(160, 1.0)
    arch = Arch.from_dict({"ks": [7] * 20, "e": [4] * 20, "d": [3] * 5, "r": 160})
    blocks = [op for op in arch_ops(arch, 1.0) if op.kind == "expanded_conv"][1:]
    for stage in range(5):
        first, later = blocks[3 * stage], blocks[3 * stage + 1]
        assert table[stage][0][2 * 3 + 1] == first  # k7 -> index 2, e4 -> index 1
        assert table[stage][1][2 * 3 + 1] == later
