"""The shard process: ModelRunner, its gRPC servicer and the protocol <-> protobuf conversion."""
