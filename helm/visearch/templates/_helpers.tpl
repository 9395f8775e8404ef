{{/* Names and labels. */}}
{{- define "visearch.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "visearch.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "visearch.labels" -}}
{{ include "visearch.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "visearch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "visearch.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image reference; call with (dict "root" $ "cuda" bool). */}}
{{- define "visearch.image" -}}
{{- $tag := default .root.Chart.AppVersion .root.Values.image.tag -}}
{{- if .cuda }}{{ $tag = printf "%s-cuda" $tag }}{{ end -}}
{{- $digest := ternary .root.Values.image.cudaDigest .root.Values.image.digest .cuda -}}
{{- if $digest -}}
{{- printf "%s:%s@%s" .root.Values.image.repository $tag $digest -}}
{{- else -}}
{{- printf "%s:%s" .root.Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "visearch.bootstrap" -}}
{{- if .Values.strimzi.enabled -}}
{{- printf "%s-kafka-bootstrap:%d" (include "visearch.strimziCluster" .) (int (ternary 9093 9092 .Values.kafka.tls.enabled)) -}}
{{- else -}}
{{- required "kafka.bootstrapServers is required (or strimzi.enabled)" .Values.kafka.bootstrapServers -}}
{{- end -}}
{{- end -}}

{{/* The Kafka cluster this release runs with strimzi.enabled. */}}
{{- define "visearch.strimziCluster" -}}
{{- printf "%s-kafka" (include "visearch.fullname" .) -}}
{{- end -}}

{{/*
Kafka authentication (streams/kafka_connection.py reads the VISEARCH_KAFKA_*
settings). Secrets are referenced, never held by the chart: the SASL
password reaches the containers by secretKeyRef, certificates as read-only
files. With strimzi.enabled the chart's cluster provides both: its cluster
CA Secret, and the KafkaUser (named like the release) whose Secret Strimzi's
user operator writes.
*/}}
{{- define "visearch.kafkaCaSecret" -}}
{{- if .Values.strimzi.enabled -}}
{{- default (printf "%s-cluster-ca-cert" (include "visearch.strimziCluster" .)) .Values.kafka.tls.caSecret -}}
{{- else -}}
{{- .Values.kafka.tls.caSecret -}}
{{- end -}}
{{- end -}}

{{- define "visearch.kafkaUser" -}}
{{- include "visearch.fullname" . -}}
{{- end -}}

{{- define "visearch.kafkaSecurityEnv" -}}
{{- $k := .Values.kafka -}}
{{- if or $k.tls.enabled $k.sasl.enabled }}
- name: VISEARCH_KAFKA_SECURITY_PROTOCOL
  value: {{ printf "%s%s" (ternary "SASL_" "" $k.sasl.enabled) (ternary "SSL" "PLAINTEXT" $k.tls.enabled) | quote }}
{{- end }}
{{- if $k.sasl.enabled }}
- name: VISEARCH_KAFKA_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
{{- if $k.sasl.existingSecret }}
- name: VISEARCH_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.existingSecret }}
      key: {{ $k.sasl.usernameKey }}
- name: VISEARCH_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.existingSecret }}
      key: {{ $k.sasl.passwordKey }}
{{- else }}
# The KafkaUser's name is its SCRAM user name; Strimzi writes its password.
- name: VISEARCH_KAFKA_SASL_USERNAME
  value: {{ include "visearch.kafkaUser" . | quote }}
- name: VISEARCH_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "visearch.kafkaUser" . }}
      key: password
{{- end }}
{{- end }}
{{- if and $k.tls.enabled (include "visearch.kafkaCaSecret" .) }}
- name: VISEARCH_KAFKA_SSL_CAFILE
  value: /etc/visearch/kafka/ca/ca.crt
{{- end }}
{{- if and $k.tls.enabled $k.tls.clientSecret }}
- name: VISEARCH_KAFKA_SSL_CERTFILE
  value: /etc/visearch/kafka/client/tls.crt
- name: VISEARCH_KAFKA_SSL_KEYFILE
  value: /etc/visearch/kafka/client/tls.key
{{- end }}
{{- end -}}

{{/* The Secrets behind VISEARCH_KAFKA_SSL_*: volumes and their read-only mounts. */}}
{{- define "visearch.kafkaVolumes" -}}
{{- $ca := include "visearch.kafkaCaSecret" . -}}
{{- if and .Values.kafka.tls.enabled $ca }}
- name: kafka-ca
  secret:
    secretName: {{ $ca }}
    items: [{key: {{ .Values.kafka.tls.caKey | quote }}, path: ca.crt}]
{{- end }}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.clientSecret }}
- name: kafka-client
  secret:
    secretName: {{ .Values.kafka.tls.clientSecret }}
    defaultMode: 0440  # the key: readable by the pod's fsGroup, no one else
    items: [{key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}]
{{- end }}
{{- end -}}

{{- define "visearch.kafkaVolumeMounts" -}}
{{- if and .Values.kafka.tls.enabled (include "visearch.kafkaCaSecret" .) }}
- {name: kafka-ca, mountPath: /etc/visearch/kafka/ca, readOnly: true}
{{- end }}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.clientSecret }}
- {name: kafka-client, mountPath: /etc/visearch/kafka/client, readOnly: true}
{{- end }}
{{- end -}}

{{/* The shard Services the API scatters to, in shard-id order. */}}
{{- define "visearch.shardUrls" -}}
{{- /* Per shard k, every copy's stable pod name (StatefulSet shard-r<r>, pod k behind the
headless Service), "|"-separated: the API picks a healthy copy, fails over and hedges. */ -}}
{{- $fullname := include "visearch.fullname" . -}}
{{- $shards := list -}}
{{- range $k := until (int .Values.shards.count) -}}
{{- $copies := list -}}
{{- range $r := until (int $.Values.shards.replicasPerShard) -}}
{{- $copies = append $copies (printf "http://%s-shard-r%d-%d.%s-shards.%s.svc:%d" $fullname $r $k $fullname $.Release.Namespace (int $.Values.shards.port)) -}}
{{- end -}}
{{- $shards = append $shards (join "|" $copies) -}}
{{- end -}}
{{- join "," $shards -}}
{{- end -}}

{{/* The feedback aggregator's Service, for the API's VISEARCH_FEEDBACK_URL. */}}
{{- define "visearch.feedbackUrl" -}}
{{- printf "http://%s-feedback.%s.svc:%d" (include "visearch.fullname" .) .Release.Namespace (int .Values.feedback.port) -}}
{{- end -}}

{{/*
Refuse settings the application cannot honour yet, at render time: a client
without SASL/TLS settings would only fail to connect after rollout.
*/}}
{{- define "visearch.checks" -}}
{{- $k := .Values.kafka -}}
{{- if and (not $k.tls.enabled) (or $k.tls.caSecret $k.tls.clientSecret) -}}
{{- fail "kafka.tls.caSecret / kafka.tls.clientSecret are set but kafka.tls.enabled is false: the clients would connect without TLS" -}}
{{- end -}}
{{- if and (not $k.sasl.enabled) $k.sasl.existingSecret -}}
{{- fail "kafka.sasl.existingSecret is set but kafka.sasl.enabled is false: the clients would not authenticate" -}}
{{- end -}}
{{- if and $k.sasl.enabled (not $k.sasl.existingSecret) (not .Values.strimzi.enabled) -}}
{{- fail "kafka.sasl.enabled needs kafka.sasl.existingSecret: a Secret with the user name and password (keys kafka.sasl.usernameKey, kafka.sasl.passwordKey); the chart never holds the password" -}}
{{- end -}}
{{- if and .Values.strimzi.enabled $k.sasl.enabled (ne $k.sasl.mechanism "SCRAM-SHA-512") -}}
{{- fail "strimzi.enabled with kafka.sasl: the chart's Strimzi listener authenticates with SCRAM-SHA-512 (Strimzi's only SCRAM mechanism); set kafka.sasl.mechanism to SCRAM-SHA-512" -}}
{{- end -}}
{{- if and .Values.strimzi.enabled $k.tls.clientSecret -}}
{{- fail "strimzi.enabled with kafka.tls.clientSecret: the chart's Strimzi cluster authenticates clients with SCRAM (kafka.sasl), not certificates" -}}
{{- end -}}
{{- if and .Values.embedWorkers.autoscaling.enabled (gt (int .Values.embedWorkers.autoscaling.maxReplicas) (int .Values.kafka.partitions.uploads)) -}}
{{- fail "embedWorkers.autoscaling.maxReplicas exceeds kafka.partitions.uploads: workers past the partition count get no partition and idle" -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled .Values.monitoring.serviceMonitor.enabled .Values.networkPolicy.apiIngressFrom (not .Values.networkPolicy.metricsFrom) -}}
{{- fail "networkPolicy.apiIngressFrom restricts the API pods, so Prometheus could not scrape them: set networkPolicy.metricsFrom to where it runs" -}}
{{- end -}}
{{- if gt (int .Values.shards.count) (int .Values.kafka.partitions.embeddings) -}}
{{- fail "shards.count exceeds kafka.partitions.embeddings: a shard would own no partition" -}}
{{- end -}}
{{- end -}}

{{/* A value as a Settings string: whole numbers without an exponent (Helm reads numbers as floats). */}}
{{- define "visearch.settingValue" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/*
VISEARCH_* variables every process shares; call with (dict "root" $ "appId" id-or-empty). Every name is a field of
streams.settings.Settings (tests/unit/test_helm_chart.py checks it).
*/}}
{{- define "visearch.env" -}}
{{- $root := .root -}}
- name: VISEARCH_KAFKA_BOOTSTRAP
  value: {{ include "visearch.bootstrap" $root | quote }}
- name: VISEARCH_EMBEDDED_BROKER
  value: "false"
- name: VISEARCH_TOPIC_PREFIX
  value: {{ $root.Values.kafka.topicPrefix | quote }}
- name: VISEARCH_REPLICATION_FACTOR
  value: {{ include "visearch.settingValue" $root.Values.kafka.replicationFactor | quote }}
- name: VISEARCH_UPLOAD_PARTITIONS
  value: {{ include "visearch.settingValue" $root.Values.kafka.partitions.uploads | quote }}
- name: VISEARCH_UPDATE_PARTITIONS
  value: {{ include "visearch.settingValue" $root.Values.kafka.partitions.updates | quote }}
- name: VISEARCH_EMBEDDING_PARTITIONS
  value: {{ include "visearch.settingValue" $root.Values.kafka.partitions.embeddings | quote }}
- name: VISEARCH_INTERACTION_PARTITIONS
  value: {{ include "visearch.settingValue" $root.Values.kafka.partitions.interactions | quote }}
- name: VISEARCH_FETCH_MAX_WAIT_MS
  value: {{ include "visearch.settingValue" $root.Values.kafka.fetchMaxWaitMs | quote }}
- name: VISEARCH_BACKGROUND_FETCH_MAX_WAIT_MS
  value: {{ include "visearch.settingValue" $root.Values.kafka.backgroundFetchMaxWaitMs | quote }}
- name: VISEARCH_APP_ID
  value: {{ default $root.Values.kafka.appId .appId | quote }}
- name: VISEARCH_INDEX_SHARDS
  value: {{ include "visearch.settingValue" $root.Values.shards.count | quote }}
- name: VISEARCH_DATA_DIR
  value: /var/lib/visearch
- name: VISEARCH_MODEL_DIR
  value: {{ $root.Values.modelDir | quote }}
- name: VISEARCH_HTTP_HOST
  value: "0.0.0.0"
{{- include "visearch.kafkaSecurityEnv" $root }}
{{- range $name, $value := $root.Values.settings }}
- name: {{ printf "VISEARCH_%s" (upper $name) }}
  value: {{ include "visearch.settingValue" $value | quote }}
{{- end }}
{{- end -}}

{{/* Writable scratch space: the root filesystem is read-only. */}}
{{- define "visearch.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end -}}

{{- define "visearch.imageStoreVolume" -}}
- name: images
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-images" (include "visearch.fullname" .)) .Values.imageStore.existingClaim }}
{{- end -}}

{{/* Pod-level settings shared by every workload; call with the component's values. */}}
{{- define "visearch.podCommon" -}}
serviceAccountName: {{ include "visearch.serviceAccountName" .root }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Egress every visearch pod needs: DNS and the Kafka brokers. */}}
{{- define "visearch.baseEgress" -}}
- ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
- ports:
    {{- range .Values.networkPolicy.kafkaPorts }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
  {{- with .Values.networkPolicy.kafkaCIDRs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  {{- end }}
{{- end -}}

{{/*
Justified checkov skips, as annotations checkov reads; call with (dict "root"
$ "envSecret" bool). CKV_K8S_43 (image by digest): the digest exists only
once CI pushes the image; set image.digest and the skip disappears.
CKV_K8S_35 (secrets as files): the settings are read from the environment
only, so a secret (the Kafka SASL password, the API token) reaches the
container by secretKeyRef and stays in its Secret.
*/}}
{{- define "visearch.checkovSkips" -}}
{{- $skips := list -}}
{{- if not .root.Values.image.digest -}}
{{- $skips = append $skips "checkov.io/skip1: CKV_K8S_43=image.digest is empty until the image is pushed; set it to pin" -}}
{{- end -}}
{{- if or .envSecret .root.Values.kafka.sasl.enabled -}}
{{- $skips = append $skips "checkov.io/skip2: CKV_K8S_35=streams.settings reads secrets (Kafka SASL password, API token) from the environment only; each stays in its Secret (secretKeyRef)" -}}
{{- end -}}
{{- join "\n" $skips -}}
{{- end -}}

{{- define "visearch.workloadAnnotations" -}}
{{- with include "visearch.checkovSkips" (dict "root" .) -}}
annotations:
  {{- . | nindent 2 }}
{{- end -}}
{{- end -}}
