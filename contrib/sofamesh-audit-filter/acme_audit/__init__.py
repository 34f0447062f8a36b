"""acme-audit: ACME's in-house sofamesh filter (per-tenant audit log and call budget)."""

from __future__ import annotations

from acme_audit.filter import AuditFilter, AuditFilterFactory

__version__ = "1.0.0"

__all__ = ["AuditFilter", "AuditFilterFactory", "__version__"]
