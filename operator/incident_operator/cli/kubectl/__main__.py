"""`python -m incident_operator.cli.kubectl` is the same as the `kubectl-incident` console script."""

import sys

from incident_operator.cli.kubectl.main import main

sys.exit(main())
