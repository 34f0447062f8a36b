"""Filter plugins: authz."""
