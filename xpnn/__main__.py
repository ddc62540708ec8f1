"""`python -m xpnn ...`: the `xpnn` command."""
from xpnn.cli import main

main()
