"""Filter plugins: quota."""
