"""Command-line interface: typer commands, the only place that wires ``fl`` into ``queue``."""
