"""Names the API is reached by: the group and version of the kinds, every label and annotation key.

Every key the operator writes or reads on an object is defined here and nowhere else, so a key
is spelled once and the API reference lists them all (`KEYS`).
"""

API_GROUP = "incident-operator.dev"
API_VERSION = "v1alpha1"
API_GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

# Incidents opened from alerts
ANNOTATION_STATUS = f"{API_GROUP}/alert-status"
"""`firing` or `resolved`: the alert's last state, written by the alert intake."""
ANNOTATION_CHANGED_AT = f"{API_GROUP}/alert-status-changed-at"
"""When the alert's state last changed (RFC 3339), written with `ANNOTATION_STATUS`."""
LABEL_FINGERPRINT = f"{API_GROUP}/fingerprint"
"""The Alertmanager fingerprint of the alert that opened the incident."""
LABEL_ALERTNAME = f"{API_GROUP}/alertname"
"""The alertname of the alert that opened the incident."""
DRILL_ALERT_LABEL = "incident_operator_drill"
"""The label a Drill's fireAlert puts on its alert (the Drill's name): the incident is a drill."""

# Secrets a Playbook may name (headersSecretRef, urlSecretRef): shared by their owner, for some hosts
SECRET_SHARED_LABEL = f"{API_GROUP}/shared-with-playbooks"
"""`"true"` on a Secret: Playbooks of its namespace may use it (only a Secret writer can set it)."""
SECRET_HOSTS_ANNOTATION = f"{API_GROUP}/allowed-hosts"
"""Comma-separated hosts a shared Secret may be sent to (`hooks.slack.com`, `*.example.com`)."""

# Objects the operator creates for an incident (Jobs, evidence ConfigMaps, NetworkPolicies)
LABEL_INCIDENT = f"{API_GROUP}/incident"
"""The incident an owned object belongs to."""
LABEL_ARCHIVE_MONTH = f"{API_GROUP}/month"
"""YYYY-MM on an IncidentArchive: the month of detection of its entries."""

# Workloads a mutating step acts on
LOCK_LEASE_PREFIX = "incident-operator-lock-"
"""Lease `incident-operator-lock-<kind>-<name>` in a workload's namespace, holder
`<incident>/<uid>/<claimed at>`: the incident running a mutating step on the workload (claimed and
released with resourceVersion-checked writes; a holder that is gone, resolved, closed or past its
run holds nothing). A Lease, not an annotation: a Deployment's annotations count in its generation."""

# Drills
REQUEST_ANNOTATION = f"{API_GROUP}/run-requested"
"""`<RFC 3339 time>` or `<time> by <user>`: a run asked for by a person (the plugin writes it)."""
DRILL_LABEL = f"{API_GROUP}/drill"
"""The Drill that opened an incident."""

# Kopf's own bookkeeping on the objects it handles
KOPF_ANNOTATION_PREFIX = API_GROUP
"""Prefix of kopf's progress and diff-base annotations (`<prefix>/<handler id>`)."""
FINALIZER = f"{API_GROUP}/finalizer"
"""The finalizer kopf would use for a deletion handler (the operator has none, so it adds none)."""

# Kubernetes' own keys the operator reads or writes
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
"""The pod-template annotation a rollout restart sets (as `kubectl rollout restart` does)."""
JOB_NAME_LABEL = "job-name"
"""The label the Job controller puts on a Job's pods."""

# Leader election
DEFAULT_LEASE_NAME = "incident-operator"
"""The Lease replicas elect their leader with (config `leaderElection.leaseName`)."""


def page_id_annotation(channel: str) -> str:
    """Where the Statuspage incident id of a channel is kept on the Incident (survives restarts)."""
    return f"{API_GROUP}/statuspage-{channel}"


KEYS: tuple[tuple[str, str, str], ...] = (
    (
        ANNOTATION_STATUS,
        "Incident annotation",
        "`firing` or `resolved`: the alert's last state (alert intake).",
    ),
    (ANNOTATION_CHANGED_AT, "Incident annotation", "When the alert's state last changed (RFC 3339)."),
    (LABEL_FINGERPRINT, "Incident label", "The Alertmanager fingerprint of the alert that opened it."),
    (LABEL_ALERTNAME, "Incident label", "The alertname of the alert that opened it."),
    (DRILL_LABEL, "Incident label", "The Drill that opened it."),
    (
        page_id_annotation("<channel>"),
        "Incident annotation",
        "The Statuspage incident id of a statuspage channel.",
    ),
    (
        LABEL_INCIDENT,
        "label on owned objects",
        "The incident a Job, evidence ConfigMap or NetworkPolicy belongs to.",
    ),
    (
        f"{LOCK_LEASE_PREFIX}<kind>-<name>",
        "Lease name (workload's namespace)",
        "Holder `<incident>/<uid>/<run>/<time>`: the incident whose run holds the workload, from its "
        "first mutating action on it until the run settles (`<incident>/<uid>/<time>` before runs "
        "were named).",
    ),
    (LABEL_ARCHIVE_MONTH, "IncidentArchive label", "YYYY-MM: the month of detection of its entries."),
    (REQUEST_ANNOTATION, "Drill annotation", "`<time>` or `<time> by <user>`: a run asked for by a person."),
    (
        f"{KOPF_ANNOTATION_PREFIX}/<handler>",
        "annotation (kopf)",
        "Kopf's handler progress and last-handled state.",
    ),
    (DRILL_ALERT_LABEL, "alert label", "Set by a Drill's fireAlert on its alert: the incident is a drill."),
    (
        SECRET_SHARED_LABEL,
        "Secret label",
        '`"true"`: Playbooks of its namespace may name the Secret (set by the Secret\'s owner).',
    ),
    (
        SECRET_HOSTS_ANNOTATION,
        "Secret annotation",
        "Comma-separated hosts a shared Secret's values may be sent to (`*.example.com` for subdomains).",
    ),
)
"""Every label and annotation key: (key, where, meaning), for the API reference."""
