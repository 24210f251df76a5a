"""``python -m engine``: the same as the ``campaign-engine`` command."""

import sys

from engine.cli import main

sys.exit(main())
