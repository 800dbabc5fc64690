"""Everything that talks to the outside: the Kubernetes API, outbound HTTP, mail, metrics, the run ledger.

Importing this package first makes `kubernetes_asyncio` load its models on first use
(`lazyclient`), unless something imported the client before.
"""

from incident_operator.adapters import lazyclient

lazyclient.install()
