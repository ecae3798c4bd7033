"""`python -m device` is the same as the `live-appliance` command."""

import sys

from device.cli import main

sys.exit(main())
