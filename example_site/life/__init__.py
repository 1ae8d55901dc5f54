"""The Game of Life app: the relay and the watch page, the grid's size, and ``manage.py gameoflife``."""
