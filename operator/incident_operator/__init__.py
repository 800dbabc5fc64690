"""incident-operator: an incident-response procedure as Kubernetes API objects, reconciled by Kopf.

The package's folders are its layers; every import points down (checked by import-linter, `make lint`):
  cli          the console scripts `incident-operator` and `kubectl-incident`
  runtime      kopf handlers, the HTTP server, leader election, the process (the only kopf importer)
  controllers  the loops: incidents, drills, alert intake, notifications
  adapters     the Kubernetes API, outbound HTTP, mail, metrics, the run ledger (the only client importer)
  core         pure decisions: phases, planning, matching, validation, access, notices, reports
  settings     the operator's config and the policies it carries (egress, templates)
  api          the kinds' models, keys, reasons and CRD generation
See docs/development/architecture.md.
"""

__version__ = "0.1.0"
