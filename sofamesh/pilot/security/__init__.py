"""Pilot's side of workload identity: the CA plugin contract, where CA state is kept, bearer tokens
that bind a workload to an identity, and Istio's CSR API on the xDS port."""
