"""``python -m openmm_forecast.cli``: the ``openmm-forecast`` command."""

import sys

from . import main

sys.exit(main())
