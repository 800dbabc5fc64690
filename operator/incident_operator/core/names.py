"""Names the operator makes for the objects it creates (ConfigMaps, Leases). Pure.

A name made of others' names (an incident's, a workload's) can be longer than the API admits, and
cutting it can end it in `-` or `.`, or make two names one. `bounded` keeps a name that fits as
it is and makes any other one from a cut prefix and a digest of the whole, so that it stays a
valid DNS subdomain and distinct.
"""

from __future__ import annotations

import hashlib

SUBDOMAIN_MAX = 253
"""The most characters of a DNS subdomain name (most objects' metadata.name)."""
_DIGEST = 16


def bounded(name: str, limit: int = SUBDOMAIN_MAX) -> str:
    """`name` if it has at most `limit` characters; else its first characters (trailing `-` and
    `.` removed), `-`, and 16 hex digits of its SHA-256. `name` is made of valid name parts
    (lowercase alphanumerics, `-`, `.`), so the result is one too."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_DIGEST]
    prefix = name[: limit - _DIGEST - 1].rstrip("-.")
    return f"{prefix}-{digest}" if prefix else digest
