{{/* The release's name for its objects: the release name, with the chart's unless it has it. */}}
{{- define "xmppd.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "xmppd.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "xmppd.labels" -}}
{{ include "xmppd.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "xmppd.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "xmppd.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-urls" (include "xmppd.fullname" .)) -}}
{{- end -}}

{{/* What every xmppd container runs with: the shared configuration, the domain, Redis, and the
observability endpoint on the pod's address. */}}
{{- define "xmppd.env" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: XMPPD_CONFIG
  value: /etc/xmppd/xmppd.toml
- name: XMPPD_SERVER__DOMAIN
  value: {{ .Values.domain | quote }}
- name: XMPPD_SERVER__DATA_DIR
  value: /var/lib/xmppd
- name: XMPPD_OBSERVABILITY__HTTP
  value: "0.0.0.0:9090"
- name: XMPPD_REGISTRY__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "xmppd.secretName" . }}
      key: registry-url
{{- end -}}

{{/* A router's or session replica's gRPC listener, and the address other nodes dial. */}}
{{- define "xmppd.grpcEnv" -}}
- name: XMPPD_LISTEN__GRPC
  value: "0.0.0.0:7000"
- name: XMPPD_LISTEN__GRPC_ADVERTISE
  value: "$(POD_IP):7000"
{{- end -}}

{{- define "xmppd.podAnnotations" -}}
checksum/config: {{ .Values.config | sha256sum }}
checksum/urls: {{ printf "%s %s %s" .Values.storage.url .Values.registry.url .Values.existingSecret | sha256sum }}
{{- if .Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: "9090"
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{- define "xmppd.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "xmppd.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Liveness and readiness, from the observability endpoint. */}}
{{- define "xmppd.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 5
  failureThreshold: 2
{{- end -}}

{{/* The configuration file and the data folder (the generated certificate). */}}
{{- define "xmppd.volumes" -}}
- name: config
  configMap:
    name: {{ include "xmppd.fullname" . }}-config
- name: data
  emptyDir: {}
{{- end -}}

{{- define "xmppd.volumeMounts" -}}
- name: config
  mountPath: /etc/xmppd
  readOnly: true
- name: data
  mountPath: /var/lib/xmppd
{{- end -}}

{{/* The worker's index in an indexed Job. The Job controller sets it too; named here so that
arguments may use it as $(JOB_COMPLETION_INDEX). */}}
{{- define "xmppd.jobIndexEnv" -}}
- name: JOB_COMPLETION_INDEX
  valueFrom:
    fieldRef:
      fieldPath: metadata.annotations['batch.kubernetes.io/job-completion-index']
{{- end -}}
