"""``python -m zwatch.cli ...``: the same as the ``zwatch`` command."""
import sys

from zwatch.cli import main

sys.exit(main())
