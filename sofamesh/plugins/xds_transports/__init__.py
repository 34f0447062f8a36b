"""xDS transports for Pilot other than grpc.aio (``xds.transport``)."""
