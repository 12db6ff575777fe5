"""End-to-end jobs behind the CLI commands, callable from Python."""
