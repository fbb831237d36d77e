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

{{/* The Secret whose key `decoy-secret` every connection-manager derives decoy salts from. */}}
{{- define "xmppd.decoySecretName" -}}
{{- .Values.decoySecret.existingSecret | default (printf "%s-decoy" (include "xmppd.fullname" .)) -}}
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
{{- if .Values.restartOnConfigChange }}
checksum/config: {{ .Values.config | sha256sum }}
{{- end }}
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

{{/* Start-up, liveness and readiness, from the observability endpoint: it answers once the
process has opened its store and registry (a replica's schema check included), for which
the start-up probe gives it two minutes before liveness counts. */}}
{{- define "xmppd.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 2
  failureThreshold: 60
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
values as floats, which would print as 5280.0 or 1e+06 and break `%d`; values.schema.json
keeps them between 1 and 65535. */}}
{{- define "xmppd.port" -}}
{{- int64 .port }}
{{- end -}}

{{- define "xmppd.websocket.port" -}}
{{- include "xmppd.port" (dict "port" .Values.websocket.port) -}}
{{- end -}}

{{- define "xmppd.websocket.tlsPort" -}}
{{- include "xmppd.port" (dict "port" .Values.websocket.tls.port) -}}
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


{{/* One worker thread per CPU of the role's limit (the downward API rounds up), when it has
one: `component` names the container, `role` its values. */}}
{{- define "xmppd.workerThreadsEnv" -}}
{{- if dig "limits" "cpu" "" .role.resources }}
- name: XMPPD_SERVER__WORKER_THREADS
  valueFrom:
    resourceFieldRef:
      containerName: {{ .component }}
      resource: limits.cpu
      divisor: "1"
{{- end }}
{{- end -}}

{{/* A role's placement: its own affinity and spread when given, else the chart's (`spread`):
soft spread over zones and nodes, and a preference for nodes without another pod of the
role. `component` names the role. */}}
{{- define "xmppd.placement" -}}
{{- $key := get (dict "connection-manager" "connectionManager" "router" "router" "session" "session") .component }}
{{- $role := get .root.Values $key }}
{{- $spread := .root.Values.spread }}
{{- if $role.affinity }}
affinity:
  {{- toYaml $role.affinity | nindent 2 }}
{{- else if $spread.enabled }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: {{ $spread.nodeKey }}
          labelSelector:
            matchLabels:
              {{- include "xmppd.selectorLabels" . | nindent 14 }}
{{- end }}
{{- if $role.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml $role.topologySpreadConstraints | nindent 2 }}
{{- else if $spread.enabled }}
topologySpreadConstraints:
  {{- range list $spread.zoneKey $spread.nodeKey }}
  - maxSkew: {{ int64 $spread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "xmppd.selectorLabels" $ | nindent 8 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* The `helm test` Pod's containers: the store (checked, never migrated) for the accounts,
and the password from the test's Secret `name`. */}}
{{- define "xmppd.testEnv" -}}
- name: XMPPD_SERVER__DOMAIN
  value: {{ .root.Values.domain | quote }}
- name: XMPPD_SERVER__DATA_DIR
  value: /var/lib/xmppd
- name: XMPPD_STORAGE__MIGRATE
  value: "false"
- name: XMPPD_STORAGE__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "xmppd.secretName" .root }}
      key: storage-url
- name: XMPPD_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: password
{{- end -}}
