"""Filter plugins: telemetry."""
