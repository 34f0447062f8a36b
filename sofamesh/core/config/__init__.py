"""sofamesh."""
