"""`python -m incident_operator` is the same as the `incident-operator` console script."""

import sys

from incident_operator.cli.main import main

sys.exit(main())
