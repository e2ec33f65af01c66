"""The gRPC contract between the kernel and isolated modules or sidecars (module.proto and its generated stubs)."""

__all__ = ["TOKEN_HEADER"]

TOKEN_HEADER = "x-edge-token"  # metadata key carrying the per-launch token on every call
