"""Workload identity on the data plane's side: SPIFFE ids, Istio's CSR API messages, the agent
that keeps this process's certificate current, and the SDS server that hands it to an Envoy."""
