{{/*
Names, labels and the per-service environment. Each Gale service rejects
configuration keys it does not know, so every service gets its own
environment (its own ConfigMap and secret references), never a shared one.
*/}}

{{- define "gale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gale.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "gale.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "gale.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gale.labels" -}}
helm.sh/chart: {{ include "gale.chart" . }}
app.kubernetes.io/name: {{ include "gale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gale
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "validate") */}}
{{- define "gale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gale.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gale.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "gale.secretName" -}}
{{- default (printf "%s-secrets" (include "gale.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/*
The Gale services: values key, name (also the consumer group gale-<name>
and the changelog gale.state.<name>), binary, input topic (KEDA lag; empty
for the sinks, which consume many topics: KEDA then sums the group's lag
over all of them) and fixed settings.
*/}}
{{- define "gale.components" -}}
ingest: {name: ingest, bin: gale-ingest, input: "", consumer: false, port: 8080}
validate: {name: validate, bin: gale-validate, input: gale.raw, consumer: true}
enrich: {name: enrich, bin: gale-enrich, input: gale.validated, consumer: true}
detectFaults: {name: detect-faults, bin: gale-detect-faults, input: gale.enriched, consumer: true}
aggregate: {name: aggregate, bin: gale-aggregate, input: gale.checked, consumer: true}
rollupSite: {name: rollup-site, bin: gale-rollup, input: gale.agg.asset.1h, consumer: true, scope: site}
rollupFleet: {name: rollup-fleet, bin: gale-rollup, input: gale.agg.site.1h, consumer: true, scope: fleet}
pgSink: {name: pg-sink, bin: gale-pg-sink, input: "", consumer: true}
archive: {name: archive, bin: gale-archive, input: "", consumer: true}
{{- end -}}

{{/* librdkafka security.protocol from the TLS and SASL settings. */}}
{{- define "gale.kafkaProtocol" -}}
{{- $k := .Values.kafka -}}
{{- if and $k.sasl.enabled $k.tls.enabled -}}SASL_SSL
{{- else if $k.sasl.enabled -}}SASL_PLAINTEXT
{{- else if $k.tls.enabled -}}SSL
{{- else -}}PLAINTEXT
{{- end -}}
{{- end -}}

{{/*
Non-secret environment of one service, as a YAML map (the service's
ConfigMap): (dict "root" $ "key" "validate" "c" $component "svc" $values)
*/}}
{{- define "gale.configEnv" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $v := $root.Values -}}
GALE_KAFKA__BOOTSTRAP_SERVERS: {{ $v.kafka.bootstrapServers | quote }}
GALE_KAFKA__CREATE_TOPICS: {{ $v.kafka.createTopics | quote }}
GALE_KAFKA__TOPIC_PARTITIONS: {{ $v.kafka.partitions | quote }}
GALE_KAFKA__REPLICATION_FACTOR: {{ $v.kafka.replicationFactor | quote }}
GALE_KAFKA__PROPERTIES__SECURITY_PROTOCOL: {{ include "gale.kafkaProtocol" $root | quote }}
{{- if $v.kafka.sasl.enabled }}
GALE_KAFKA__PROPERTIES__SASL_MECHANISMS: {{ $v.kafka.sasl.mechanism | quote }}
GALE_KAFKA__PROPERTIES__SASL_USERNAME: {{ $v.kafka.sasl.username | quote }}
{{- end }}
{{- if and $v.kafka.tls.enabled $v.kafka.tls.caSecret }}
GALE_KAFKA__PROPERTIES__SSL_CA_LOCATION: /etc/gale/kafka-ca/ca.crt
{{- end }}
{{- range $key, $value := $v.kafka.properties }}
{{ printf "GALE_KAFKA__PROPERTIES__%s" ($key | replace "." "_" | upper) }}: {{ $value | toString | quote }}
{{- end }}
GALE_REGISTRY__URL: {{ $v.registry.url | quote }}
{{- if $v.registry.username }}
GALE_REGISTRY__USERNAME: {{ $v.registry.username | quote }}
{{- end }}
GALE_HTTP__LISTEN: "0.0.0.0:9100"
GALE_TELEMETRY__LOG_FORMAT: {{ $v.telemetry.logFormat | quote }}
GALE_TELEMETRY__LOG_LEVEL: {{ $v.telemetry.logLevel | quote }}
{{- if $v.telemetry.otlpEndpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ $v.telemetry.otlpEndpoint | quote }}
{{- end }}
{{- if eq $c.name "ingest" }}
GALE_INGEST__LISTEN: "0.0.0.0:8080"
{{- end }}
{{- if and (eq $c.name "validate") .svc.assetsFromPostgres }}
GALE_VALIDATE__ASSETS__SOURCE: postgres
{{- end }}
{{- if $c.scope }}
GALE_ROLLUP__SCOPE: {{ $c.scope | quote }}
{{- end }}
{{- if and (eq $c.name "pg-sink") $v.migrations.enabled }}
GALE_DATABASE__MIGRATE: "false"
{{- end }}
{{- if eq $c.name "archive" }}
GALE_ARCHIVE__STORE__URL: {{ $v.lake.url | quote }}
{{- range $key, $value := $v.lake.options }}
{{ printf "GALE_ARCHIVE__STORE__OPTIONS__%s" ($key | upper) }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- range $key, $value := .svc.env }}
{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* A secretKeyRef env entry: (list $root "ENV_NAME" "secret-key") */}}
{{- define "gale.secretEnv" -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ include "gale.secretName" (index . 0) }}
      key: {{ index . 2 }}
{{- end -}}

{{/* Secret and per-pod environment of one service (container `env`). */}}
{{- define "gale.podEnv" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $v := $root.Values -}}
{{- if and $c.consumer $v.kafka.staticMembership }}
- name: GALE_KAFKA__GROUP_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- if $v.kafka.sasl.enabled }}
{{ include "gale.secretEnv" (list $root "GALE_KAFKA__PROPERTIES__SASL_PASSWORD" "kafka-sasl-password") }}
{{- end }}
{{- if $v.registry.username }}
{{ include "gale.secretEnv" (list $root "GALE_REGISTRY__PASSWORD" "registry-password") }}
{{- end }}
{{- if eq $c.name "ingest" }}
{{ include "gale.secretEnv" (list $root "GALE_INGEST__SOURCES" "ingest-sources") }}
{{- end }}
{{- if and (eq $c.name "validate") .svc.assetsFromPostgres }}
{{ include "gale.secretEnv" (list $root "GALE_VALIDATE__ASSETS__URL" "database-url") }}
{{- end }}
{{- if eq $c.name "enrich" }}
{{ include "gale.secretEnv" (list $root "GALE_ASSETS__URL" "database-url") }}
{{- end }}
{{- if eq $c.name "pg-sink" }}
{{ include "gale.secretEnv" (list $root "GALE_DATABASE__URL" "database-url") }}
{{- end }}
{{- if and (eq $c.name "archive") $v.lake.useStaticCredentials }}
{{ include "gale.secretEnv" (list $root "GALE_ARCHIVE__STORE__OPTIONS__AWS_ACCESS_KEY_ID" "s3-access-key-id") }}
{{ include "gale.secretEnv" (list $root "GALE_ARCHIVE__STORE__OPTIONS__AWS_SECRET_ACCESS_KEY" "s3-secret-access-key") }}
{{- end }}
{{- end -}}

{{/* Restricted pod and container security contexts. */}}
{{- define "gale.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "gale.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
