{{/* Names and labels shared by every template. */}}

{{- define "nexrl-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "nexrl-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nexrl-operator.labels" -}}
{{ include "nexrl-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "nexrl-operator.serviceAccountName" -}}
{{- default (include "nexrl-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "nexrl-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The runtime image of jobs without spec.image ("" when runtime.image.repository is ""). */}}
{{- define "nexrl-operator.runtimeImage" -}}
{{- with .Values.runtime.image -}}
{{- if .repository -}}
{{- printf "%s:%s" .repository (default $.Chart.AppVersion .tag) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Namespaces where NexRLJobs run and the runtime's ServiceAccount is made, one per line. */}}
{{- define "nexrl-operator.runtimeNamespaces" -}}
{{- $namespaces := .Values.runtime.namespaces | default .Values.watchNamespaces | default (list .Release.Namespace) -}}
{{- join "\n" (uniq $namespaces) -}}
{{- end -}}

{{/*
What the operator does to namespaced resources (kopf and its own client; docs/operator-runtime.md,
"Permissions"). tests/helm/test_rbac.py checks these against every request of the e2e scenarios.
*/}}
{{- define "nexrl-operator.namespacedRules" -}}
- apiGroups: [nexrl.io]
  resources: [nexrljobs]
  verbs: [list, watch, patch]
- apiGroups: [nexrl.io]
  resources: [nexrljobs/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [""]
  resources: [configmaps, services, persistentvolumeclaims]
  verbs: [get, create, patch]
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [get, list, watch, create, patch]
- apiGroups: [ray.io]
  resources: [rayjobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [resourcequotas]
  verbs: [list, watch]
{{- end -}}

{{/*
Cluster-scoped: kopf discovers the resources it serves from the CRDs; GPU admission reads the
NexRLQuotas (and writes their status) and re-plans when namespaces (their labels) change; serving a
list of namespaces, kopf also watches which of them exist.
*/}}
{{- define "nexrl-operator.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if or .Values.watchNamespaces .Values.operator.quotas }}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- if .Values.operator.quotas }}
- apiGroups: [nexrl.io]
  resources: [nexrlquotas]
  verbs: [list, watch]
- apiGroups: [nexrl.io]
  resources: [nexrlquotas/status]
  verbs: [patch]
{{- end }}
{{- end -}}

{{/* The runtime (Ray head) merge-patches step, reward and policyVersion of its own job. */}}
{{- define "nexrl-operator.runtimeRules" -}}
- apiGroups: [nexrl.io]
  resources: [nexrljobs/status]
  verbs: [patch]
{{- end -}}
