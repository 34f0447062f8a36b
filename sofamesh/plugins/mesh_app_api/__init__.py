"""The SOFA mesh app API: the sidecar HTTP endpoints an anthunder app calls (PROTOCOLS.md section 10)."""
