"""Filter plugins: authn."""
