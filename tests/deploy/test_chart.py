"""The Helm chart, rendered by helm itself for five value sets and checked three ways: `helm
lint --strict`, every built-in object against Kubernetes' own schemas (kubernetes-validate,
strict), every custom resource against its operator's published schema; then one class per
defect an operator would meet (issue #16)."""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.registry import SERVICES, spec
from shared.events.topics import COMPACTED_TOPICS, all_topics_with_dlq
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "leadwire"
HERE = Path(__file__).resolve().parent
VALUE_SETS = ["defaults", "sasl-ssl", "mtls", "no-autoscaling", "ingress"]
KUBERNETES_VERSIONS = ["1.34", "1.37"]
# The labels every object carries (Kubernetes' recommended set plus Helm's chart label).
STANDARD_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
}


def _load_helm_module() -> Any:
    path = ROOT / "deploy" / "local" / "helm.py"
    module_spec = importlib.util.spec_from_file_location("leadwire_local_helm", path)
    assert module_spec is not None
    assert module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm built from source through the Go module proxy (cached under .cache/helm)."""
    return Path(_load_helm_module().fetch_helm(ROOT))


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, check=False)


@functools.cache
def _template(helm: Path, value_set: str, args: tuple[str, ...], release: str) -> str:
    values = HERE / "values" / f"{value_set}.yaml"
    proc = run_helm(
        helm, "template", release, str(CHART), "--namespace", "crm", "-f", str(values), *args
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def render(helm: Path, value_set: str = "defaults", *args: str, release: str = "lw") -> list[Any]:
    """The chart's objects (parsed afresh each call, so a test may change them)."""
    return [doc for doc in yaml.safe_load_all(_template(helm, value_set, args, release)) if doc]


def of_kind(docs: list[Any], kind: str) -> list[Any]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[Any], kind: str, suffix: str) -> Any:
    (found,) = [d for d in of_kind(docs, kind) if d["metadata"]["name"].endswith(suffix)]
    return found


def pod_specs(docs: list[Any]) -> Iterator[tuple[str, Any]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
        elif doc["kind"] == "Pod":
            yield doc["metadata"]["name"], doc["spec"]


def env_of(container: Any) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# ---------------------------------------------------------------- published schemas


def _strict(schema: Any) -> Any:
    """A CRD schema as the API server's strict field validation applies it: an object with
    declared properties rejects undeclared ones (unless it preserves unknown fields)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _crd_schemas() -> dict[tuple[str, str], Any]:
    schemas = {}
    for path in sorted((HERE / "crds").glob("*.json")):
        doc = json.loads(path.read_text())
        schemas[(doc["apiVersion"], doc["kind"])] = _strict(doc["schema"])
    return schemas


CRDS = _crd_schemas()


@pytest.mark.parametrize("value_set", VALUE_SETS)
class TestRendersValidObjects:
    def test_helm_lint_strict_passes(self, helm: Path, value_set: str) -> None:
        values = HERE / "values" / f"{value_set}.yaml"
        proc = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values))
        assert proc.returncode == 0, proc.stdout + proc.stderr

    @pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
    def test_builtin_objects_validate_strictly(
        self, helm: Path, value_set: str, version: str
    ) -> None:
        builtin = [d for d in render(helm, value_set) if (d["apiVersion"], d["kind"]) not in CRDS]
        assert {d["kind"] for d in builtin} >= {"Deployment", "Service", "Job", "Pod"}
        for doc in builtin:
            kubernetes_validate.validate(doc, version, strict=True)

    def test_custom_resources_validate_against_their_crds(self, helm: Path, value_set: str) -> None:
        custom = [d for d in render(helm, value_set) if (d["apiVersion"], d["kind"]) in CRDS]
        assert custom, "every value set renders KafkaTopics"
        for doc in custom:
            jsonschema.validate(doc, CRDS[(doc["apiVersion"], doc["kind"])])

    def test_every_object_carries_the_standard_labels(self, helm: Path, value_set: str) -> None:
        for doc in render(helm, value_set):
            labels = doc["metadata"].get("labels", {})
            assert labels.keys() >= STANDARD_LABELS, (doc["kind"], doc["metadata"]["name"])


class TestSchemaChecks:
    def test_strict_crd_schema_rejects_an_unknown_field(self) -> None:
        topic = {
            "apiVersion": "kafka.strimzi.io/v1",
            "kind": "KafkaTopic",
            "metadata": {"name": "t"},
            "spec": {"partitions": 3, "replica": 3},
        }
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(topic, CRDS[("kafka.strimzi.io/v1", "KafkaTopic")])

    def test_kubernetes_validate_rejects_an_unknown_field(self) -> None:
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80}], "selectr": {}},
        }
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(service, "1.34", strict=True)


# ---------------------------------------------------------------- defect 1: Strimzi's API


class TestKafkaTopicApiVersion:
    def test_v1_when_the_cluster_serves_it_or_is_unknown(self, helm: Path) -> None:
        for args in [(), ("--api-versions", "kafka.strimzi.io/v1/KafkaTopic")]:
            topics = of_kind(render(helm, "defaults", *args), "KafkaTopic")
            assert {t["apiVersion"] for t in topics} == {"kafka.strimzi.io/v1"}

    def test_v1beta2_on_a_cluster_that_only_serves_v1beta2(self, helm: Path) -> None:
        docs = render(helm, "sasl-ssl", "--api-versions", "kafka.strimzi.io/v1beta2/KafkaTopic")
        versions = {d["apiVersion"] for d in docs if d["kind"] in ("KafkaTopic", "KafkaUser")}
        assert versions == {"kafka.strimzi.io/v1beta2"}
        for doc in docs:
            if doc["kind"] in ("KafkaTopic", "KafkaUser"):
                jsonschema.validate(doc, CRDS[(doc["apiVersion"], doc["kind"])])

    def test_v1_preferred_when_both_are_served(self, helm: Path) -> None:
        both = ["--api-versions", "kafka.strimzi.io/v1beta2/KafkaTopic"]
        both += ["--api-versions", "kafka.strimzi.io/v1/KafkaTopic"]
        topics = of_kind(render(helm, "defaults", *both), "KafkaTopic")
        assert {t["apiVersion"] for t in topics} == {"kafka.strimzi.io/v1"}


# ---------------------------------------------------------------- defect 2: topic creation


class TestTopicsProvisionedByTheOperator:
    def test_one_topic_and_one_dlq_per_leadwire_topic(self, helm: Path) -> None:
        topics = of_kind(render(helm), "KafkaTopic")
        assert sorted(t["spec"]["topicName"] for t in topics) == sorted(all_topics_with_dlq())

    def test_no_service_or_job_creates_topics(self, helm: Path) -> None:
        for value_set in VALUE_SETS:
            for name, pod in pod_specs(render(helm, value_set)):
                for container in pod["containers"]:
                    if container["name"] == "readyz":  # the helm test pod talks HTTP only
                        continue
                    assert env_of(container)["LEADWIRE_KAFKA_CREATE_TOPICS"] == "false", name

    def test_sizing_and_retention_come_from_values(self, helm: Path) -> None:
        sets = ["kafka.topics.partitions=48", "kafka.topics.replicationFactor=5"]
        sets += ["kafka.topics.minInsyncReplicas=3", "kafka.topics.retentionMs=86400000"]
        sets += ["kafka.topics.dlqRetentionMs=172800000"]
        topics = of_kind(render(helm, "defaults", "--set", ",".join(sets)), "KafkaTopic")
        for topic in topics:
            dlq = topic["spec"]["topicName"].endswith(".dlq")
            assert topic["spec"]["partitions"] == 48
            assert topic["spec"]["replicas"] == 5
            assert topic["spec"]["config"]["min.insync.replicas"] == 3
            if topic["spec"]["topicName"] not in COMPACTED_TOPICS:
                retention = topic["spec"]["config"]["retention.ms"]
                assert retention == (172800000 if dlq else 86400000)

    def test_the_prefix_names_topics_groups_and_services_alike(self, helm: Path) -> None:
        docs = render(helm, "ingress")
        names = {t["spec"]["topicName"] for t in of_kind(docs, "KafkaTopic")}
        assert names == {f"prod.{t}" for t in all_topics_with_dlq()}
        env = env_of(
            named(docs, "Deployment", "-contacts")["spec"]["template"]["spec"]["containers"][0]
        )
        assert env["LEADWIRE_TOPIC_PREFIX"] == "prod."
        groups = [
            t["metadata"]["consumerGroup"]
            for t in named(docs, "ScaledObject", "-contacts")["spec"]["triggers"]
        ]
        assert all(g.startswith("prod.contacts.") for g in groups)

    def test_state_topics_are_compacted_never_expired(self, helm: Path) -> None:
        topics = {
            t["spec"]["topicName"]: t["spec"]["config"] for t in of_kind(render(helm), "KafkaTopic")
        }
        for name in COMPACTED_TOPICS:
            assert topics[name]["cleanup.policy"] == "compact"
            assert "retention.ms" not in topics[name]
            assert "cleanup.policy" not in topics[f"{name}.dlq"]
        assert sum("cleanup.policy" in config for config in topics.values()) == len(
            COMPACTED_TOPICS
        )

    def test_topics_can_be_left_to_the_operator(self, helm: Path) -> None:
        docs = render(helm, "defaults", "--set", "kafka.topics.create=false")
        assert of_kind(docs, "KafkaTopic") == []


# ---------------------------------------------------------------- defect 3: uninstall


class TestTopicsSurviveUninstall:
    def test_every_topic_is_kept_by_helm(self, helm: Path) -> None:
        for topic in of_kind(render(helm), "KafkaTopic"):
            assert topic["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    def test_topics_go_to_the_namespace_the_topic_operator_watches(self, helm: Path) -> None:
        assert {t["metadata"]["namespace"] for t in of_kind(render(helm), "KafkaTopic")} == {"crm"}
        docs = render(helm, "sasl-ssl")
        for doc in of_kind(docs, "KafkaTopic") + of_kind(docs, "KafkaUser"):
            assert doc["metadata"]["namespace"] == "kafka"
            assert doc["metadata"]["labels"]["strimzi.io/cluster"] == "prod"


# ---------------------------------------------------------------- defect 4: autoscaling


def code_consumer_groups(service: str) -> list[str]:
    """The consumer groups the service's code subscribes, read from its spec."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from shared.app import ServiceContext

    service_spec = spec(service)
    engine = create_async_engine("sqlite+aiosqlite://")  # connects on first use only: never
    ctx = ServiceContext(service_spec, Settings(), engine, None, None, None)  # type: ignore[arg-type]
    return [s.group for s in service_spec.subscriptions(ctx)]


class TestAutoscaling:
    def test_kafka_triggers_cover_every_consumer_group_of_the_code(self, helm: Path) -> None:
        docs = render(helm)
        values = yaml.safe_load((CHART / "values.yaml").read_text())["services"]
        for service in SERVICES:
            assert sorted(values[service]["consumerGroups"]) == sorted(
                code_consumer_groups(service)
            )
            triggers = named(docs, "ScaledObject", f"-{service}")["spec"]["triggers"]
            groups = [t["metadata"]["consumerGroup"] for t in triggers if t["type"] == "kafka"]
            if values[service].get("scaleOnCpu"):
                assert [t["type"] for t in triggers] == ["cpu"], service
            else:
                assert sorted(groups) == sorted(code_consumer_groups(service)), service

    def test_lag_is_read_from_the_earliest_offset_like_the_services(self, helm: Path) -> None:
        for scaled in of_kind(render(helm), "ScaledObject"):
            for trigger in scaled["spec"]["triggers"]:
                if trigger["type"] == "kafka":
                    assert trigger["metadata"]["offsetResetPolicy"] == "earliest"

    def test_secured_clusters_get_a_trigger_authentication(self, helm: Path) -> None:
        docs = render(helm, "sasl-ssl")
        (auth,) = of_kind(docs, "TriggerAuthentication")
        refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
        assert refs["password"]["name"] == "leadwire"
        assert refs["password"]["key"] == "password"  # a Strimzi KafkaUser's Secret key
        assert refs["ca"] == {"parameter": "ca", "name": "prod-cluster-ca-cert", "key": "ca.crt"}
        scaler = named(docs, "Secret", "-kafka-scaler")
        assert scaler["stringData"] == {
            "tls": "enable",
            "sasl": "scram_sha512",
            "username": "leadwire",
        }
        for param in ("sasl", "username", "tls"):
            assert refs[param] == {
                "parameter": param,
                "name": scaler["metadata"]["name"],
                "key": param,
            }
        for scaled in of_kind(docs, "ScaledObject"):
            for trigger in scaled["spec"]["triggers"]:
                if trigger["type"] == "kafka":
                    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]

    def test_mutual_tls_gives_the_scaler_the_client_certificate(self, helm: Path) -> None:
        (auth,) = of_kind(render(helm, "mtls"), "TriggerAuthentication")
        refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
        assert refs["cert"] == ("leadwire", "user.crt")
        assert refs["key"] == ("leadwire", "user.key")
        assert "password" not in refs

    def test_plaintext_clusters_need_no_authentication(self, helm: Path) -> None:
        assert of_kind(render(helm), "TriggerAuthentication") == []

    def test_keda_owns_the_replica_count(self, helm: Path) -> None:
        for deployment in of_kind(render(helm), "Deployment"):
            assert "replicas" not in deployment["spec"]

    def test_fixed_replicas_without_autoscaling(self, helm: Path) -> None:
        docs = render(helm, "no-autoscaling")
        assert of_kind(docs, "ScaledObject") == []
        replicas = {
            d["metadata"]["name"]: d["spec"]["replicas"] for d in of_kind(docs, "Deployment")
        }
        assert replicas == {f"lw-leadwire-{s}": 4 if s == "contacts" else 3 for s in SERVICES}

    def test_max_replicas_default_to_the_partition_count(self, helm: Path) -> None:
        docs = render(helm, "ingress")  # 24 partitions
        for scaled in of_kind(docs, "ScaledObject"):
            assert scaled["spec"]["maxReplicaCount"] == 24

    def test_max_replicas_beyond_the_partitions_are_refused(self, helm: Path) -> None:
        proc = run_helm(
            helm, "template", "lw", str(CHART), "--set", "services.contacts.maxReplicas=13"
        )
        assert proc.returncode != 0
        assert (
            "services.contacts.maxReplicas (13) exceeds kafka.topics.partitions (12)" in proc.stderr
        )


# ---------------------------------------------------------------- defect 5: two releases


class TestTwoReleasesInOneNamespace:
    def test_selectors_never_match_the_other_release(self, helm: Path) -> None:
        first, second = render(helm, release="blue"), render(helm, release="green")
        pods_of_second = [
            d["spec"]["template"]["metadata"]["labels"] for d in of_kind(second, "Deployment")
        ]
        for doc in of_kind(first, "Deployment") + of_kind(first, "PodDisruptionBudget"):
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector["app.kubernetes.io/instance"] == "blue"
            assert not any(selector.items() <= labels.items() for labels in pods_of_second)
        for service in of_kind(first, "Service"):
            selector = service["spec"]["selector"]
            assert not any(selector.items() <= labels.items() for labels in pods_of_second)

    def test_names_are_distinct(self, helm: Path) -> None:
        blue = {(d["kind"], d["metadata"]["name"]) for d in render(helm, release="blue")}
        green = {(d["kind"], d["metadata"]["name"]) for d in render(helm, release="green")}
        # Only the topics are shared: they are the cluster's, named after the Kafka topics.
        assert {kind for kind, _ in blue & green} == {"KafkaTopic"}


# ---------------------------------------------------------------- defect 6: Pod Security


class TestRestrictedPodSecurity:
    def test_every_pod_meets_the_restricted_profile(self, helm: Path) -> None:
        for value_set in VALUE_SETS:
            docs = render(helm, value_set)
            for name, pod in pod_specs(docs):
                assert pod["securityContext"]["runAsNonRoot"] is True, name
                assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
                assert pod["automountServiceAccountToken"] is False, name
                for container in pod["containers"]:
                    context = container["securityContext"]
                    assert context["allowPrivilegeEscalation"] is False, name
                    assert context["capabilities"] == {"drop": ["ALL"]}, name
                    assert context["readOnlyRootFilesystem"] is True, name
                    assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
                    assert context["runAsNonRoot"] is True, name

    def test_the_writable_tmp_is_mounted_where_the_root_is_read_only(self, helm: Path) -> None:
        for name, pod in pod_specs(render(helm)):
            if pod.get("volumes") is None:
                continue  # the helm test pod writes nothing
            assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"], name
            mounts = pod["containers"][0]["volumeMounts"]
            assert {"name": "tmp", "mountPath": "/tmp"} in mounts, name

    def test_a_service_account_without_a_token(self, helm: Path) -> None:
        docs = render(helm)
        (account,) = of_kind(docs, "ServiceAccount")
        assert account["automountServiceAccountToken"] is False
        for name, pod in pod_specs(docs):
            assert pod["serviceAccountName"] == account["metadata"]["name"], name


# ---------------------------------------------------------------- defect 7: the migration Job


class TestMigrationJob:
    def test_bounded_labelled_and_cleaned_up(self, helm: Path) -> None:
        (job,) = of_kind(render(helm), "Job")
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert job["spec"]["activeDeadlineSeconds"] == 600
        assert job["spec"]["ttlSecondsAfterFinished"] == 86400
        assert job["spec"]["template"]["metadata"]["labels"].keys() >= STANDARD_LABELS
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["migrate"]
        assert container["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
        assert container["resources"]["limits"] == {"memory": "256Mi"}


# ---------------------------------------------------------------- defect 8: what operators expect


class TestKafkaCredentials:
    def test_sasl_password_from_the_strimzi_user_secret(self, helm: Path) -> None:
        docs = render(helm, "sasl-ssl")
        env = env_of(
            named(docs, "Deployment", "-contacts")["spec"]["template"]["spec"]["containers"][0]
        )
        assert env["LEADWIRE_KAFKA_SASL_USERNAME"] == "leadwire"
        assert env["LEADWIRE_KAFKA_SASL_PASSWORD"] == {
            "secretKeyRef": {"name": "leadwire", "key": "password"}
        }
        assert env["LEADWIRE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert env["LEADWIRE_KAFKA_SSL_CAFILE"] == "/etc/leadwire/kafka-ca/ca.crt"

    def test_mutual_tls_mounts_the_client_certificate(self, helm: Path) -> None:
        docs = render(helm, "mtls")
        for name, pod in pod_specs(docs):
            if name.endswith("-test"):
                continue
            container = pod["containers"][0]
            env = env_of(container)
            assert env["LEADWIRE_KAFKA_SSL_CERTFILE"] == "/etc/leadwire/kafka-client/user.crt"
            assert env["LEADWIRE_KAFKA_SSL_KEYFILE"] == "/etc/leadwire/kafka-client/user.key"
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            assert mounts["kafka-client"] == "/etc/leadwire/kafka-client"
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert volumes["kafka-client"]["secret"] == {"secretName": "leadwire"}

    def test_kafka_user_grants_only_leadwire_topics_and_groups(self, helm: Path) -> None:
        (user,) = of_kind(render(helm, "sasl-ssl"), "KafkaUser")
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
        resources = [acl["resource"] for acl in user["spec"]["authorization"]["acls"]]
        assert {"type": "topic", "name": "leadwire.", "patternType": "prefix"} in resources
        groups = {r["name"] for r in resources if r["type"] == "group"}
        assert groups == {f"{s}." for s in SERVICES}


class TestServiceDiscovery:
    def test_every_service_knows_where_the_others_answer(self, helm: Path) -> None:
        docs = render(helm)
        expected = {s: f"http://lw-leadwire-{s}:{spec(s).port}" for s in SERVICES}
        for deployment in of_kind(docs, "Deployment"):
            env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
            assert json.loads(env["LEADWIRE_SERVICE_URLS"]) == expected


class TestNetworking:
    def test_a_network_policy_per_service(self, helm: Path) -> None:
        docs = render(helm)
        policies = of_kind(docs, "NetworkPolicy")
        assert len(policies) == len(SERVICES)
        for policy in policies:
            assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
            ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
            assert ports == {53, 9092, 9093, 5432}

    def test_ingress_exposes_only_ingest_public_paths(self, helm: Path) -> None:
        assert of_kind(render(helm), "Ingress") == []
        docs = render(helm, "ingress")
        (ingress,) = of_kind(docs, "Ingress")
        rule = ingress["spec"]["rules"][0]
        assert rule["host"] == "leads.example.com"
        backends = {p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
        assert backends == {"lw-leadwire-ingest"}
        assert ingress["spec"]["tls"] == [
            {"hosts": ["leads.example.com"], "secretName": "leads-example-com"}
        ]
        ingest_policy = named(docs, "NetworkPolicy", "-ingest")
        peers = ingest_policy["spec"]["ingress"][0]["from"]
        assert any("namespaceSelector" in peer for peer in peers)

    def test_service_monitor_scrapes_metrics(self, helm: Path) -> None:
        assert of_kind(render(helm), "ServiceMonitor") == []
        (monitor,) = of_kind(render(helm, "ingress"), "ServiceMonitor")
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
        assert monitor["metadata"]["labels"]["release"] == "prometheus"


class TestPodPlacementAndLifecycle:
    def test_spread_placement_and_pull_secrets(self, helm: Path) -> None:
        docs = render(helm, "no-autoscaling")
        pod = named(docs, "Deployment", "-scoring")["spec"]["template"]["spec"]
        keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        assert pod["nodeSelector"] == {"pool": "leadwire"}
        assert pod["tolerations"][0]["key"] == "dedicated"
        pull = render(helm, "mtls")
        for name, spec_ in pod_specs(pull):
            assert spec_["imagePullSecrets"] == [{"name": "registry"}], name

    def test_per_service_resources(self, helm: Path) -> None:
        docs = render(helm, "no-autoscaling")
        contacts = named(docs, "Deployment", "-contacts")["spec"]["template"]["spec"]
        scoring = named(docs, "Deployment", "-scoring")["spec"]["template"]["spec"]
        assert contacts["containers"][0]["resources"]["limits"] == {"memory": "2Gi"}
        assert scoring["containers"][0]["resources"]["limits"] == {"memory": "512Mi"}

    def test_probes_and_a_graceful_stop(self, helm: Path) -> None:
        for deployment in of_kind(render(helm), "Deployment"):
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
            grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            assert grace > 5 + 10  # preStop, then uvicorn's 10 s graceful shutdown


class TestImageReference:
    def test_tag_defaults_to_the_app_version(self, helm: Path) -> None:
        app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
        for _, pod in pod_specs(render(helm)):
            assert pod["containers"][0]["image"] == f"ghcr.io/leadwire/leadwire:{app_version}"
        for _, pod in pod_specs(render(helm, "ingress")):
            assert pod["containers"][0]["image"] == "ghcr.io/leadwire/leadwire:0.1.0-rc1"

    def test_a_digest_pins_the_image(self, helm: Path) -> None:
        for _, pod in pod_specs(render(helm, "mtls")):
            image = pod["containers"][0]["image"]
            assert image == "ghcr.io/leadwire/leadwire@sha256:" + "0123456789abcdef" * 4


class TestValuesSchema:
    @pytest.mark.parametrize(
        "setting",
        [
            "ingress.enabld=true",
            "kafka.securityProtocol=TLS",
            "services.contacts.replicaz=3",
            "image.digest=latest",
            "kafka.topics.partitions=0",
        ],
    )
    def test_unknown_or_wrong_values_are_refused(self, helm: Path, setting: str) -> None:
        proc = run_helm(helm, "template", "lw", str(CHART), "--set", setting)
        assert proc.returncode != 0, setting
        assert "values don't meet the specifications of the schema" in proc.stderr


class TestOperatorAids:
    def test_helm_test_checks_every_service_is_ready(self, helm: Path) -> None:
        (pod,) = of_kind(render(helm), "Pod")
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        container = pod["spec"]["containers"][0]
        assert container["command"] == ["leadwire", "check-ready"]
        assert sorted(container["args"]) == sorted(
            f"http://lw-leadwire-{s}:{spec(s).port}" for s in SERVICES
        )

    def test_notes_tell_how_to_check_and_start(self, helm: Path, tmp_path: Path) -> None:
        # `helm install --dry-run` needs a cluster; a copy of the chart renders NOTES.txt into
        # a ConfigMap instead, through the same template engine and values.
        chart = tmp_path / "leadwire"
        shutil.copytree(CHART, chart)
        notes_template = (CHART / "templates" / "NOTES.txt").read_text()
        (chart / "templates" / "_notes_probe.tpl").write_text(
            '{{- define "notes-probe" -}}\n' + notes_template + "{{- end }}\n"
        )
        (chart / "templates" / "notes-probe.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
            'data:\n  notes: |\n    {{- include "notes-probe" . | nindent 4 }}\n'
        )
        proc = run_helm(
            helm,
            "template",
            "lw",
            str(chart),
            "-n",
            "crm",
            "--show-only",
            "templates/notes-probe.yaml",
        )
        assert proc.returncode == 0, proc.stderr
        notes = yaml.safe_load(proc.stdout)["data"]["notes"]
        assert "helm test lw -n crm" in notes
        assert "leadwire keys create" in notes
        assert "kafka.strimzi.io/v1 KafkaTopics in namespace crm" in notes
