"""``python -m avsl_edge``: the ``avsl-edge`` command (see :mod:`avsl_edge.console`)."""

import sys

from avsl_edge.console import main

sys.exit(main())
