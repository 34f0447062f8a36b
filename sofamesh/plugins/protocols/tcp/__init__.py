"""The ``tcp`` protocol plugin: bytes proxied to a cluster undecoded."""
