"""`sofamesh ratelimit-server`: a global rate limit service (Envoy RLS v3) backed by Redis."""
