"""The built-in CA: a self-signed root kept in Pilot's storage, or an operator's intermediate."""
