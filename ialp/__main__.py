"""``python -m ialp``."""

import sys

from ialp.cli import main

sys.exit(main())
