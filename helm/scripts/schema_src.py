"""Source of helm/gale/values.schema.json (run `python3 helm/scripts/schema_src.py`).

Kept as Python so every key carries its description once; the JSON schema
and the values reference in helm/README.md are both generated from it.
"""
import json
import pathlib


def obj(desc, props, required=None, extra=False):
    o = {"type": "object", "description": desc, "additionalProperties": extra, "properties": props}
    if required:
        o["required"] = required
    return o


def s(desc, **kw):
    return {"type": "string", "description": desc, **kw}


def i(desc, **kw):
    return {"type": "integer", "description": desc, **kw}


def b(desc):
    return {"type": "boolean", "description": desc}


def m(desc, values=None, names=None):
    o = {"type": "object", "description": desc, "additionalProperties": values or {"type": "string"}}
    if names:
        o["propertyNames"] = {"pattern": names}
    return o


def a(desc, items=None):
    return {"type": "array", "description": desc, "items": items or {"type": "object"}}


QUANTITY = {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "number"}]}
RESOURCES = obj(
    "Container resources (requests, limits).",
    {"requests": m("Requests, e.g. {cpu: 100m, memory: 128Mi}.", QUANTITY),
     "limits": m("Limits, e.g. {memory: 512Mi}.", QUANTITY)},
)
SERVICE_ACCOUNT = obj(
    "The service's own ServiceAccount.",
    {"create": b("Create a ServiceAccount for the service."),
     "annotations": m("ServiceAccount annotations (e.g. an IRSA role ARN or a GKE workload identity).")},
)
POD = {
    "replicas": i("Replicas when autoscaling is off.", minimum=0),
    "resources": RESOURCES,
    "podAnnotations": m("Extra pod annotations."),
    "podLabels": m("Extra pod labels."),
    "nodeSelector": m("Node selector."),
    "tolerations": a("Tolerations."),
    "affinity": {"type": "object", "description": "Affinity rules."},
    "topologySpread": obj(
        "Spread of replicas over nodes and zones (ScheduleAnyway).",
        {"enabled": b("Add topologySpreadConstraints (hostname and zone)."),
         "maxSkew": i("Largest allowed difference in replicas between nodes/zones.", minimum=1)},
    ),
    "pdb": obj(
        "PodDisruptionBudget.",
        {"enabled": b("Create a PodDisruptionBudget."),
         "maxUnavailable": {"description": "Pods that may be down during voluntary disruptions (number or percentage).",
                            "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+%$"}]}},
    ),
    "serviceAccount": SERVICE_ACCOUNT,
    "terminationGracePeriodSeconds": i("Seconds between SIGTERM and SIGKILL; above processing.shutdown_timeout (30s).", minimum=1),
}


def service(desc, extra=None):
    props = {
        "enabled": b("Deploy this service."),
        "env": m("Extra GALE_<SECTION>__<KEY> variables (non-secret), in the service's ConfigMap; each must be a key the service accepts (a name without `__`, such as GALE_KAFKA_BOOTSTRAP_SERVERS, is refused here: the service would ignore it).",
                 {"type": ["string", "number", "boolean"]}, names="^GALE_[A-Z0-9_]*[A-Z0-9]__[A-Z0-9][A-Z0-9_]*$"),
        "autoscaling": b("Let autoscaling (HPA or KEDA) scale this service; false keeps `replicas`."),
        **POD,
    }
    props.update(extra or {})
    return obj(desc, props)


schema = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Gale Helm chart values",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "global": {"type": "object", "description": "Helm global values (unused by this chart)."},
        "image": obj("The Gale image: every service binary and the `gale` CLI.", {
            "repository": s("Image repository."),
            "tag": s("Image tag; the chart's appVersion when empty."),
            "pullPolicy": s("Image pull policy.", enum=["Always", "IfNotPresent", "Never"]),
        }),
        "imagePullSecrets": a("Pull secrets, e.g. [{name: regcred}].", {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
        "nameOverride": s("Replaces the chart name in resource names."),
        "fullnameOverride": s("Replaces the release-chart prefix of resource names."),
        "kafka": obj("Kafka connection shared by every service.", {
            "bootstrapServers": s("Comma-separated host:port list (kafka.bootstrap_servers).", minLength=1),
            "createTopics": b("Let services create missing topics at start (kafka.create_topics); the hook Job creates them, so off."),
            "partitions": i("Partitions of every topic the hook Job creates; also bounds KEDA/HPA replicas of consumers.", minimum=1),
            "replicationFactor": i("Replication factor of the topics.", minimum=1),
            "staticMembership": b("Set kafka.group_instance_id to the pod name (static group membership: a restarted pod gets its partitions back without a rebalance)."),
            "sasl": obj("SASL authentication; the password is the Secret's kafka-sasl-password.", {
                "enabled": b("Use SASL."),
                "mechanism": s("SASL mechanism.", enum=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]),
                "username": s("SASL user name."),
            }),
            "tls": obj("TLS to the brokers.", {
                "enabled": b("Use TLS (SSL or SASL_SSL)."),
                "caSecret": s("Secret with the CA certificate (key ca.crt); system CAs when empty."),
            }),
            "properties": m("Extra librdkafka properties (non-secret), e.g. {linger.ms: \"20\"}; those Gale sets itself are refused by the services.",
                            {"type": ["string", "number", "boolean"]}),
        }, required=["bootstrapServers"]),
        "registry": obj("Confluent-compatible schema registry.", {
            "url": s("Base URL (registry.url).", minLength=1),
            "username": s("Basic-auth user; the password is the Secret's registry-password."),
        }),
        "secrets": obj("Credentials: a Secret made by the chart, or existingSecret with the keys database-url, kafka-sasl-password, registry-password, ingest-sources, s3-access-key-id, s3-secret-access-key.", {
            "existingSecret": s("Name of your own Secret; the chart makes none when set."),
            "databaseUrl": s("Postgres URL (pg-sink, the asset registry of validate and enrich, migrations, helm test)."),
            "kafkaSaslPassword": s("Kafka SASL password."),
            "registryPassword": s("Schema registry password."),
            "ingestSources": s("ingest's sources with their API keys, a TOML inline array: [{name=\"scada\", api_keys=[\"...\"]}] (keys of 8+ characters)."),
            "s3AccessKeyId": s("S3 access key id (lake.useStaticCredentials)."),
            "s3SecretAccessKey": s("S3 secret access key (lake.useStaticCredentials)."),
        }),
        "lake": obj("The Parquet lake written by archive.", {
            "url": s("s3://bucket/prefix, or file:///path: an emptyDir of the archive pod, lost with it (development only; archive then runs one replica, never autoscaled).", pattern="^(s3|file)://"),
            "options": m("object_store options (non-secret): aws_region, aws_endpoint, aws_allow_http, aws_virtual_hosted_style_request.",
                         {"type": ["string", "boolean"]}),
            "useStaticCredentials": b("Take S3 keys from the Secret; leave off with IRSA / workload identity."),
        }),
        "telemetry": obj("Traces and logs.", {
            "otlpEndpoint": s("OTLP/HTTP endpoint for traces (OTEL_EXPORTER_OTLP_ENDPOINT, protobuf, usually port 4318: the services do not speak gRPC on 4317); none when empty.", pattern="^(|https?://.+)$"),
            "logFormat": s("Log format.", enum=["json", "human"]),
            "logLevel": s("Log filter in tracing syntax, e.g. info or info,gale_runtime=debug."),
        }),
        "topics": obj("Topics created by the pre-install/pre-upgrade hook Job.", {
            "create": b("Run the topic Job."),
            "image": obj("Image with kafka-topics.sh.", {"repository": s("Repository."), "tag": s("Tag.")}),
            "list": a("Topics: name and comma-separated topic configs (state changelogs need cleanup.policy=compact).",
                      obj("A topic.", {"name": s("Topic name.", pattern="^[A-Za-z0-9._-]+$"),
                                       "config": s("Topic configs, e.g. retention.ms=604800000,cleanup.policy=delete.")},
                          required=["name"])),
        }),
        "migrations": obj("pg-sink's migrations in a hook Job (`gale db migrate`).", {
            "enabled": b("Run the migration Job (and turn off pg-sink's own migration at start)."),
        }),
        "defaults": obj("Settings every service inherits; a service's own block overrides them.", POD),
        "autoscaling": obj("Scaling of the services.", {
            "mode": s("none, hpa (CPU) or keda (consumer-group lag); never both.", enum=["none", "hpa", "keda"]),
            "minReplicas": i("Fewest replicas.", minimum=1),
            "maxReplicas": i("Most replicas (consumers: at most kafka.partitions).", minimum=1),
            "targetCPUUtilizationPercentage": i("CPU target (hpa; ingest under keda).", minimum=1, maximum=100),
            "lagThreshold": i("KEDA: consumer lag per replica that adds a replica.", minimum=1),
            "pollingInterval": i("KEDA polling interval, seconds.", minimum=1),
            "cooldownPeriod": i("KEDA cool-down before scaling to the minimum, seconds.", minimum=0),
        }),
        "services": obj("The Gale services.", {
            "ingest": service("gale-ingest: HTTP batches and file drops into gale.raw (API on port 8080)."),
            "validate": service("gale-validate: units, asset registry, limits, quality score.",
                                {"assetsFromPostgres": b("Read the asset registry from Postgres (the Secret's database-url).")}),
            "enrich": service("gale-enrich: asset context and expected power."),
            "detectFaults": service("gale-detect-faults: turbine, meter and gap faults."),
            "aggregate": service("gale-aggregate: event-time windows per asset."),
            "rollupSite": service("gale-rollup with rollup.scope=site."),
            "rollupFleet": service("gale-rollup with rollup.scope=fleet (one key: keep one replica)."),
            "pgSink": service("gale-pg-sink: topics into Postgres."),
            "archive": service("gale-archive: topics into Parquet on the lake."),
        }),
        "statusPage": obj("The browser status page (`gale status-page`, port 9400); not deployed with kafka.sasl or kafka.tls on (the CLI has no such settings).", {
            "enabled": b("Deploy the status page."),
            "serviceAccountAnnotations": m("Annotations of its ServiceAccount, e.g. an IRSA role that may list an s3:// lake."),
            "replicas": i("Replicas.", minimum=0),
            "resources": RESOURCES,
        }),
        "ingress": obj("Ingress for ingest's readings API.", {
            "enabled": b("Create the Ingress."),
            "className": s("IngressClass name."),
            "annotations": m("Ingress annotations."),
            "host": s("Host name."),
            "path": s("Path prefix routed to ingest.", pattern="^/"),
            "tlsSecret": s("TLS Secret; no TLS when empty."),
        }),
        "serviceMonitor": obj("Prometheus operator ServiceMonitor for every service's /metrics.", {
            "enabled": b("Create the ServiceMonitor (needs the CRD)."),
            "interval": s("Scrape interval.", pattern="^[0-9]+(ms|s|m|h)$"),
            "labels": m("Labels your Prometheus selects ServiceMonitors by."),
        }),
        "prometheusRule": obj("Gale's alert rules (files/prometheus/gale-alerts.yml) as a PrometheusRule.", {
            "enabled": b("Create the PrometheusRule (needs the CRD)."),
            "labels": m("Labels your Prometheus selects rules by."),
        }),
        "dashboards": obj("Grafana dashboards as ConfigMaps for Grafana's sidecar.", {
            "enabled": b("Create the dashboard ConfigMaps."),
            "label": s("Label the sidecar watches."),
            "labelValue": s("Its value."),
            "folder": s("Grafana folder (grafana_folder annotation)."),
        }),
        "networkPolicy": obj("NetworkPolicies for the Gale pods.", {
            "enabled": b("Create the NetworkPolicies."),
            "egressPorts": obj("Egress ports allowed, by destination.", {
                k: a(d, {"type": "integer", "minimum": 1, "maximum": 65535}) for k, d in [
                    ("kafka", "Broker ports."), ("registry", "Schema registry ports."), ("database", "Postgres ports."),
                    ("objectStore", "Object store ports."), ("collector", "OTLP collector ports.")]
            }),
            "egressPeers": a("NetworkPolicyPeer objects the egress rules allow; anywhere when empty."),
            "ingressControllerNamespaceLabels": m("Labels of the ingress controller's namespace (ingest's API)."),
            "monitoringNamespaceLabels": m("Labels of Prometheus's namespace (port 9100)."),
        }),
        "tests": obj("`helm test`: a reading posted to ingest must reach Postgres.", {
            "enabled": b("Create the test pod."),
            "psqlImage": obj("Image with psql.", {"repository": s("Repository."), "tag": s("Tag.")}),
        }),
    },
}

if __name__ == "__main__":
    import sys

    out = pathlib.Path(__file__).resolve().parent.parent / "gale" / "values.schema.json"
    text = json.dumps(schema, indent=2) + "\n"
    if "--check" in sys.argv[1:]:
        if not out.exists() or out.read_text() != text:
            sys.exit(f"{out} is not current: run python3 helm/scripts/schema_src.py")
        print(f"{out} is current")
    else:
        out.write_text(text)
        print(f"wrote {out}")
