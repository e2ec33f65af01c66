"""Isolated modules and sidecars: the kernel's gRPC API on a Unix socket (module.proto), the supervisor that
launches and watches their processes, and the SDK runner that gives an isolated Python module the same
ModuleContext API as in-process. The generated stubs (module_pb2*.py) are committed; module.proto says how to
regenerate them.
"""

import os

# The gateway forks module processes while its gRPC server runs; gRPC's fork handlers are for children that
# use the parent's channels, which ours never do (they exec at once). Off, they neither run nor log on each fork.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
