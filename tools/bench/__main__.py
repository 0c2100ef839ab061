"""``python -m zwatch.tools.bench [workloads...] [--quick] [--against-etcd] ...`` (see cli.py)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
