"""The gateway's schema for Sparkplug B payloads (spb_payload.proto) and the classes grpc_tools generates from it."""
