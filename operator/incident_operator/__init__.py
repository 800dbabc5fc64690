"""incident-operator: an incident-response procedure as Kubernetes API objects, reconciled by Kopf.

Package layout (pure modules import neither kopf nor a Kubernetes client):
  config       pure: the operator's run-time settings (CLI flags and --config file)
  handlers     kopf: the one startup handler that configures the framework
  httpserver   aiohttp: the operator's HTTP endpoints (/healthz, /readyz)
  runner       wires kopf and the HTTP server into one asyncio program
  cli          the `incident-operator` console script
"""

__version__ = "0.1.0"

API_GROUP = "incident-operator.dev"
API_VERSION = "v1alpha1"
