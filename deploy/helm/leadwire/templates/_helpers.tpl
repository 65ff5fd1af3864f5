{{- define "leadwire.env" -}}
- name: LEADWIRE_BUS
  value: kafka
- name: LEADWIRE_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: LEADWIRE_TOPIC_PARTITIONS
  value: {{ .Values.kafka.topicPartitions | quote }}
- name: LEADWIRE_HOST
  value: "0.0.0.0"
- name: DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ .Values.database.urlSecret }}, key: DATABASE_URL}}
- name: LEADWIRE_AUTH_SECRET
  valueFrom: {secretKeyRef: {name: {{ .Values.auth.secret }}, key: LEADWIRE_AUTH_SECRET}}
{{- end -}}
