"""``python -m mmtp_rs.cli ...``: the same as the ``mmtp`` command."""

import sys

from mmtp_rs.cli.main import main

sys.exit(main())
