{{/*
Helpers of the incident-operator chart. Object names are fixed (not prefixed by the release):
the opt-in RoleBindings, the operator's messages and docs name them, so one release per cluster.
*/}}

{{/* Labels of every object: the install's own label and Helm's. */}}
{{- define "incident-operator.labels" -}}
app.kubernetes.io/part-of: incident-operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* The operator's identity as the API server names it. */}}
{{- define "incident-operator.user" -}}
system:serviceaccount:{{ .Release.Namespace }}:incident-operator
{{- end }}

{{/* The image: repository@digest when a digest is given, else repository:tag (tag defaults to appVersion). */}}
{{- define "incident-operator.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* The Secrets the operator may read in its namespace: the alert token and the channels' URL Secrets. */}}
{{- define "incident-operator.secretNames" -}}
{{- $names := list .Values.alertTokenSecret "notification-urls" -}}
{{- range (dig "notifications" "channels" list .Values.config) -}}
{{- $smtp := .smtp | default dict -}}
{{- range (list .urlSecretRef .keySecretRef $smtp.usernameSecretRef $smtp.passwordSecretRef $smtp.caSecretRef) -}}
{{- $ref := . | default dict -}}
{{- if and $ref.name (eq ($ref.namespace | default $.Release.Namespace) $.Release.Namespace) -}}
{{- $names = append $names $ref.name -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson (uniq $names) -}}
{{- end }}

{{/* Checks across values that the schema cannot express, with a message saying what to change. */}}
{{- define "incident-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{- fail (printf "replicaCount is %d but leaderElection.enabled is false: replicas without leader election would all act on every incident; enable leaderElection or set replicaCount: 1" (int .Values.replicaCount)) -}}
{{- end -}}
{{- range .Values.optIn.jobs -}}
{{- if not (has . $.Values.optIn.remediation) -}}
{{- fail (printf "optIn.jobs lists namespace %q, which optIn.remediation does not: Job steps need both opt-ins (add %q to optIn.remediation)" . .) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.podDisruptionBudget.enabled (ge (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) -}}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be below replicaCount (%d), or no node could ever be drained (with one replica, set podDisruptionBudget.enabled: false)" (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) -}}
{{- end -}}
{{- end }}
