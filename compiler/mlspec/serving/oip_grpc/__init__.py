"""The Open Inference Protocol's gRPC service (package ``inference``, ``GRPCInferenceService``): the proto and the
code ``scripts/generate_oip_grpc.py`` generates from it (never edited by hand; a test checks it against the proto)."""
