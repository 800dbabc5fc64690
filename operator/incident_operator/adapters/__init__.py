"""Everything that talks to the outside: the Kubernetes API, outbound HTTP, mail, metrics, the run ledger."""
