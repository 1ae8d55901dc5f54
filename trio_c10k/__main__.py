"""``python -m trio_c10k APP``: see ``trio_c10k._cli``."""

from ._cli import main

main()
