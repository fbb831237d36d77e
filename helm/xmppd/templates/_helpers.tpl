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

{{/* The Secret with a role's cluster certificate: `component` is connection-manager, router
or session. */}}
{{- define "xmppd.clusterTls.secretName" -}}
{{- $names := .root.Values.clusterTls.secretNames }}
{{- $named := get (dict "connection-manager" $names.connectionManager "router" $names.router "session" $names.session) .component }}
{{- $named | default (printf "%s-%s-tls" (include "xmppd.fullname" .root) .component) -}}
{{- end -}}

{{/* Where a role reads its cluster certificate, or that it runs without one. */}}
{{- define "xmppd.clusterTls.env" -}}
{{- if .root.Values.clusterTls.enabled }}
- name: XMPPD_CLUSTER_TLS__DIR
  value: /etc/xmppd-cluster-tls
{{- else }}
- name: XMPPD_CLUSTER_TLS__ENABLED
  value: "false"
{{- end }}
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

{{/* WebSocket (RFC 7395) on the connection-managers. Ports go through int64: Helm reads
values as floats, which would print as 5280.0 or 1e+06 and break `%d`. */}}
{{- define "xmppd.port" -}}
{{- $port := int64 .port }}
{{- if or (lt $port 1) (gt $port 65535) }}
{{- fail (printf "%s must be a port number (1 to 65535), not %v" .name .port) }}
{{- end }}
{{- $port }}
{{- end -}}

{{- define "xmppd.websocket.port" -}}
{{- include "xmppd.port" (dict "name" "websocket.port" "port" .Values.websocket.port) -}}
{{- end -}}

{{- define "xmppd.websocket.tlsPort" -}}
{{- include "xmppd.port" (dict "name" "websocket.tls.port" "port" .Values.websocket.tls.port) -}}
{{- end -}}

{{/* Whether either WebSocket listener is on ("true" or empty). */}}
{{- define "xmppd.websocket.on" -}}
{{- if or .Values.websocket.enabled .Values.websocket.tls.enabled }}true{{ end -}}
{{- end -}}

{{/* The URL host-meta advertises: the value, or the Ingress's host when the Ingress has one
and TLS ends there; empty leaves it to the server (the listener's scheme and the Host). */}}
{{- define "xmppd.websocket.publicUrl" -}}
{{- $ws := .Values.websocket }}
{{- if $ws.publicUrl }}
{{- $ws.publicUrl }}
{{- else if and $ws.ingress.enabled $ws.ingress.host (or $ws.ingress.tls.secretName $ws.considerSecure) }}
{{- printf "wss://%s%s" $ws.ingress.host $ws.path }}
{{- end }}
{{- end -}}

{{/* The connection-manager's WebSocket listeners and [websocket] keys; both listeners off
(the server's own default is a loopback ws:// listener) unless enabled. */}}
{{- define "xmppd.websocketEnv" -}}
{{- $ws := .Values.websocket }}
- name: XMPPD_LISTEN__WEBSOCKET
  value: {{ if $ws.enabled }}{{ printf "0.0.0.0:%s" (include "xmppd.websocket.port" .) | quote }}{{ else }}""{{ end }}
- name: XMPPD_LISTEN__WEBSOCKET_TLS
  value: {{ if $ws.tls.enabled }}{{ printf "0.0.0.0:%s" (include "xmppd.websocket.tlsPort" .) | quote }}{{ else }}""{{ end }}
{{- if include "xmppd.websocket.on" . }}
- name: XMPPD_WEBSOCKET__PATH
  value: {{ $ws.path | quote }}
- name: XMPPD_WEBSOCKET__ORIGINS
  value: {{ $ws.origins | default list | toJson | quote }}
- name: XMPPD_WEBSOCKET__CONSIDER_SECURE
  value: {{ $ws.considerSecure | toString | quote }}
- name: XMPPD_WEBSOCKET__PUBLIC_URL
  value: {{ include "xmppd.websocket.publicUrl" . | quote }}
{{- end }}
{{- end -}}
