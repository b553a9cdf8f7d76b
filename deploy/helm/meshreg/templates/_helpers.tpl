{{/* The name of the chart, or nameOverride. */}}
{{- define "meshreg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of the Service and the DaemonSet: the release name, with the
chart's name added unless the release name holds it already.
*/}}
{{- define "meshreg.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The labels that select the pods: they must never change. */}}
{{- define "meshreg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshreg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "meshreg.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "meshreg.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The cluster key Secret: the one the chart creates, or the operator's. */}}
{{- define "meshreg.clusterKeySecret" -}}
{{- if .Values.clusterKey.value }}
{{- printf "%s-cluster-key" (include "meshreg.fullname" .) }}
{{- else if .Values.clusterKey.existingSecret }}
{{- .Values.clusterKey.existingSecret }}
{{- else }}
{{- fail "clusterKey: set clusterKey.existingSecret to the name of a Secret holding swarm.key (kubectl create secret generic meshreg-cluster-key --from-file=swarm.key), or clusterKey.value to the key itself: --bootstrap-expect needs the cluster key" }}
{{- end }}
{{- end }}

{{- define "meshreg.joinTokenSecret" -}}
{{- if .Values.joinToken.value }}
{{- printf "%s-join-token" (include "meshreg.fullname" .) }}
{{- else }}
{{- .Values.joinToken.existingSecret }}
{{- end }}
{{- end }}

{{/* http, or https once the API serves TLS. */}}
{{- define "meshreg.scheme" -}}
{{- if .Values.tls.existingSecret }}https{{ else }}http{{ end }}
{{- end }}

{{/* What the nodes --join: every node, through the headless Service. */}}
{{- define "meshreg.joinURL" -}}
{{- printf "%s://%s.%s.svc.%s:5000" (include "meshreg.scheme" .) (include "meshreg.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "meshreg.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
