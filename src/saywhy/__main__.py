"""``python -m saywhy``: the ``saywhy`` command."""
import sys

from saywhy.cli import main

sys.exit(main())
