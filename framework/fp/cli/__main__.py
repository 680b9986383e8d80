"""``python -m fp.cli``: the same command line as the ``fp`` script."""
from fp.cli import main

main()
