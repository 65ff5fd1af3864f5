{{- define "leadwire.env" -}}
- name: LEADWIRE_BUS
  value: kafka
- name: LEADWIRE_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: LEADWIRE_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if .Values.kafka.sasl.secret }}
- name: LEADWIRE_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: LEADWIRE_KAFKA_SASL_USERNAME
  valueFrom: {secretKeyRef: {name: {{ .Values.kafka.sasl.secret }}, key: LEADWIRE_KAFKA_SASL_USERNAME}}
- name: LEADWIRE_KAFKA_SASL_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .Values.kafka.sasl.secret }}, key: LEADWIRE_KAFKA_SASL_PASSWORD}}
{{- end }}
{{- if .Values.kafka.caSecret }}
- name: LEADWIRE_KAFKA_SSL_CAFILE
  value: /etc/leadwire/kafka-ca/ca.crt
{{- end }}
- name: LEADWIRE_TOPIC_PARTITIONS
  value: {{ .Values.kafka.topicPartitions | quote }}
- name: LEADWIRE_HOST
  value: "0.0.0.0"
- name: LEADWIRE_FORWARDED_ALLOW_IPS
  value: {{ .Values.forwardedAllowIps | quote }}
- name: DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ .Values.database.urlSecret }}, key: DATABASE_URL}}
- name: LEADWIRE_AUTH_SECRET
  valueFrom: {secretKeyRef: {name: {{ .Values.auth.secret }}, key: LEADWIRE_AUTH_SECRET}}
{{- end -}}
