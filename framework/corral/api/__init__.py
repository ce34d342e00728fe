"""The gRPC job API: servicers and generated stubs."""
