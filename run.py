#!/usr/bin/env python
"""The xpnn command line, from a checkout: ``python run.py COMMAND ...`` is ``xpnn COMMAND ...``.

    python run.py train -c resnet                            # runs/resnet-<timestamp>/
    python run.py train --resume runs/resnet-20260101-120000  # after a crash or Ctrl-C
    python run.py evaluate runs/resnet-20260101-120000
    python run.py --help                                     # every command

The commands live in the package `xpnn.cli` (folder cli/); `python run.py --help` lists them.
"""
from xpnn.cli import main  # imports nothing heavy: main() first installs the signal handlers

if __name__ == "__main__":
    main()
