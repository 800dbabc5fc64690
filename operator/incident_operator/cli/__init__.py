"""The console scripts: `incident-operator` and `kubectl-incident`."""
