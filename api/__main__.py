"""`python -m netc ...`: the command line, as `netc ...` (torchrun starts each rank this way: `torchrun
--nproc-per-node K -m netc train ...`)."""

import sys

from netc.cli import main

sys.exit(main())
