"""The Sparkplug B payload definition (sparkplug_b.proto) and the classes grpc_tools generates from it."""
