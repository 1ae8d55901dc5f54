"""``runserver``, served by trio_c10k."""
