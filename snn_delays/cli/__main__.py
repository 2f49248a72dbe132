"""``python -m snn_delays.cli`` (and ``torchrun -m snn_delays.cli``): the ``snn-delays`` command."""

import sys

from . import main

sys.exit(main())
