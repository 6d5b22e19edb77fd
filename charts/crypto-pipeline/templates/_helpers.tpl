{{/* Common labels on every object of this chart. */}}
{{- define "crypto-pipeline.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: crypto-pipeline
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The task namespace: every namespaced object of this chart lives there (except monitoring). */}}
{{- define "crypto-pipeline.taskNamespace" -}}
{{ .Values.taskNamespace.name }}
{{- end }}

{{/* Keys of the pipeline Secret: only these may carry secret values (architecture.md). */}}
{{- define "crypto-pipeline.secretKeys" -}}
CRYPTOPIPE_API__KEY CRYPTOPIPE_ALERTS__SLACK_WEBHOOK_URL CRYPTOPIPE_WAREHOUSE__URL
{{- end }}

{{/* Pod selector of the task pods: the DAG labels them part-of crypto-pipeline. */}}
{{- define "crypto-pipeline.taskPodSelector" -}}
matchLabels:
  app.kubernetes.io/part-of: crypto-pipeline
{{- end }}
