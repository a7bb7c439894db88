"""``python -m cltm_pipeline.cli``: the same as the ``cltm`` command."""

import sys

from cltm_pipeline.cli import main

sys.exit(main())
