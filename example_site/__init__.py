"""The example Django project served by trio_c10k: demo pages and benchmark views."""
