"""``python -m zwatch.actors.syncer``: run the syncer in this process (tools/cluster.py uses it;
the Procfile and deploy/ go through ``python -m zwatch.actors syncer`` or ``zwatch syncer``)."""
import sys

from .service import main

sys.exit(main())
