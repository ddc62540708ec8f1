"""`python -m xpnn ...`: the `xpnn` command."""
from xpnn.cli import main  # imports nothing heavy: main() first installs the signal handlers

main()
