"""Generated gRPC stubs of the ctsynth.v1 contract (make proto)."""
