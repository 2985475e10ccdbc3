"""Generated gRPC code (hack/gen-proto.sh). Do not edit."""
