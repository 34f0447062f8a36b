"""The ``sofaregistry`` registry plugin: Pilot serves SOFARegistry's client protocol.

SOFARegistry clients (``sofa-registry-node``, SOFARPC's registry client) publish and subscribe
against Pilot as if it were a SOFARegistry session server; what they publish is in the mesh model.
"""
