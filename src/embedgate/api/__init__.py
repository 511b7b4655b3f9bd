"""The HTTP layer: thin routes over the engine, one error mapping, metrics and middleware."""
