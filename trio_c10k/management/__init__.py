"""Django management commands of trio_c10k."""
