{{/* Names: the release's prefix for every object, truncated to Kubernetes' 63 characters. */}}
{{- define "leadwire.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "leadwire.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "leadwire.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "leadwire.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "leadwire.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels; call with (dict "root" $ "component" "contacts"). */}}
{{- define "leadwire.labels" -}}
helm.sh/chart: {{ include "leadwire.chart" .root }}
{{ include "leadwire.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: leadwire
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* Selector labels: name, instance (two releases in one namespace never mix) and component. */}}
{{- define "leadwire.selectorLabels" -}}
app.kubernetes.io/name: {{ include "leadwire.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "leadwire.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "leadwire.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: a digest pins it exactly; otherwise the tag, by default the chart's appVersion. */}}
{{- define "leadwire.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* KafkaTopic's API: v1 where the cluster serves it (Strimzi 1.0 removed v1beta2), else
v1beta2 for older Strimzi; `kafka.strimzi.apiVersion` forces one (e.g. for `helm template`). */}}
{{- define "leadwire.strimziApiVersion" -}}
{{- if .Values.kafka.strimzi.apiVersion }}
{{- .Values.kafka.strimzi.apiVersion }}
{{- else if .Capabilities.APIVersions.Has "kafka.strimzi.io/v1/KafkaTopic" }}
{{- "kafka.strimzi.io/v1" }}
{{- else if .Capabilities.APIVersions.Has "kafka.strimzi.io/v1beta2/KafkaTopic" }}
{{- "kafka.strimzi.io/v1beta2" }}
{{- else }}
{{- "kafka.strimzi.io/v1" }}
{{- end }}
{{- end }}

{{/* Restricted Pod Security: the pod's and every container's security context. */}}
{{- define "leadwire.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile: {type: RuntimeDefault}
{{- end }}

{{- define "leadwire.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end }}

{{/* Volumes every Leadwire container mounts: a writable /tmp (the root filesystem is
read-only) and the Kafka TLS material the settings point at. */}}
{{- define "leadwire.volumes" -}}
- name: tmp
  emptyDir: {sizeLimit: 64Mi}
{{- with .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret: {secretName: {{ . }}}
{{- end }}
{{- with .Values.kafka.tls.clientSecret }}
- name: kafka-client
  secret: {secretName: {{ . }}}
{{- end }}
{{- end }}

{{- define "leadwire.volumeMounts" -}}
- {name: tmp, mountPath: /tmp}
{{- if .Values.kafka.tls.caSecret }}
- {name: kafka-ca, mountPath: /etc/leadwire/kafka-ca, readOnly: true}
{{- end }}
{{- if .Values.kafka.tls.clientSecret }}
- {name: kafka-client, mountPath: /etc/leadwire/kafka-client, readOnly: true}
{{- end }}
{{- end }}

{{- define "leadwire.env" -}}
- name: LEADWIRE_BUS
  value: kafka
- name: LEADWIRE_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: LEADWIRE_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
# Topics are the KafkaTopic resources' (replication, min.insync.replicas); never created here.
- name: LEADWIRE_KAFKA_CREATE_TOPICS
  value: "false"
- name: LEADWIRE_TOPIC_PREFIX
  value: {{ .Values.kafka.topics.prefix | quote }}
- name: LEADWIRE_TOPIC_PARTITIONS
  value: {{ .Values.kafka.topics.partitions | quote }}
{{- if .Values.kafka.sasl.secret }}
- name: LEADWIRE_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: LEADWIRE_KAFKA_SASL_USERNAME
  value: {{ .Values.kafka.sasl.username | quote }}
- name: LEADWIRE_KAFKA_SASL_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .Values.kafka.sasl.secret }}, key: {{ .Values.kafka.sasl.passwordKey }}}}
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- name: LEADWIRE_KAFKA_SSL_CAFILE
  value: /etc/leadwire/kafka-ca/{{ .Values.kafka.tls.caKey }}
{{- end }}
{{- if .Values.kafka.tls.clientSecret }}
- name: LEADWIRE_KAFKA_SSL_CERTFILE
  value: /etc/leadwire/kafka-client/{{ .Values.kafka.tls.certKey }}
- name: LEADWIRE_KAFKA_SSL_KEYFILE
  value: /etc/leadwire/kafka-client/{{ .Values.kafka.tls.keyKey }}
{{- end }}
- name: LEADWIRE_HOST
  value: "0.0.0.0"
- name: LEADWIRE_FORWARDED_ALLOW_IPS
  value: {{ .Values.forwardedAllowIps | quote }}
# Where contacts asks the other services for their part of a person's export.
- name: LEADWIRE_SERVICE_URLS
  value: {{ include "leadwire.serviceUrls" . | quote }}
- name: DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ .Values.database.secret }}, key: {{ .Values.database.key }}}}
- name: LEADWIRE_AUTH_SECRET
  valueFrom: {secretKeyRef: {name: {{ .Values.auth.secret }}, key: {{ .Values.auth.key }}}}
{{- end }}

{{/* The topics of the chart: every Leadwire topic and its dead-letter twin. */}}
{{- define "leadwire.topics" -}}
leadwire.leads.v1
leadwire.engagement.v1
leadwire.contacts.v1
leadwire.contact-commands.v1
leadwire.scores.v1
leadwire.workflow-runs.v1
leadwire.notification-requests.v1
leadwire.notifications.v1
leadwire.access.v1
leadwire.access-usage.v1
{{- end }}

{{/* Topics holding states by key: compacted, kept forever (every API key's latest state). */}}
{{- define "leadwire.compactedTopics" -}}
leadwire.access.v1
{{- end }}

{{/* Every service's in-cluster base URL, by name, as JSON. */}}
{{- define "leadwire.serviceUrls" -}}
{{- $urls := dict }}
{{- range $name, $svc := .Values.services }}
{{- $_ := set $urls $name (printf "http://%s-%s:%v" (include "leadwire.fullname" $) $name $svc.port) }}
{{- end }}
{{- toJson $urls }}
{{- end }}
