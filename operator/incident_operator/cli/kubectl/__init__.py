"""`kubectl incident`: the on-call engineer's commands (console script `kubectl-incident`).

kubectl finds the script on PATH and passes the arguments after `incident` as they are. Each
command reads or changes Incidents through the API server with the user's own kubeconfig
(`--kubeconfig`, `--context`, `-n` as kubectl; the context's namespace by default), so RBAC and
the admission policies apply to the person, not to the operator. Changes are to `spec` only
(the operator owns `status`); lists edited in place (approvals, action items) carry the
resourceVersion they were read at, so two people editing at once never lose an edit.

Exit codes: 0 done, 1 the API server or the incident refused (the reason is printed, as kubectl
prints it), 2 a usage error.

One module per group of commands: `respond`, `review`, `plan`, `explain`, `oncall`; `client` (API access,
output), `main` (arguments).
"""

from incident_operator.cli.kubectl.main import main

__all__ = ["main"]
