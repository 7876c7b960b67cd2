"""A small layer-level graph of a (sub-)network, and its writers for each runtime's format.

Per-operator latency models and whole networks come from the same builder, so a block timed
alone is exactly the block that runs inside the network: that is what makes the sum of a latency
table comparable to an end-to-end measurement. BatchNorm is folded into the convolutions (as every
inference runtime does); layouts are NCHW here and converted by each writer.
"""
