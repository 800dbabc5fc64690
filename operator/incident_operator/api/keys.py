"""Names the API is reached by: the group and version of the kinds, every label and annotation key."""

API_GROUP = "incident-operator.dev"
API_VERSION = "v1alpha1"
