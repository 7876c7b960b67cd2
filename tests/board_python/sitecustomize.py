"""Imported first by every Python process of the loopback TVM boards (tests/tvm_rpc_cluster.py puts
this folder on their PYTHONPATH): a board's TVM runtime has no PyTorch, so neither do they.

tvm_ffi imports torch whenever it can (for DLPack exchange): 3.6 s of the 6 s each tracker, server
and server worker took to start on a 2-core machine. With torch importable only as a failure, they
start as a Jetson's ``python3 -m tvm.exec.rpc_server`` does.
"""

import sys

sys.modules.setdefault("torch", None)
