#!/usr/bin/env python
"""``python run.py COMMAND ...`` is ``xpnn COMMAND ...``, for a checkout installed with
``pip install -e .``."""
try:
    from xpnn.cli import main  # imports nothing heavy: main() first installs the signal handlers
except ModuleNotFoundError as error:
    raise SystemExit(f"xpnn is not installed here ({error}); from the checkout: pip install -e .")

if __name__ == "__main__":
    main()
