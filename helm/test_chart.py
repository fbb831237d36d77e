#!/usr/bin/env python3
"""Tests of the Helm chart in helm/xmppd, run by .ci/test after the Rust tests (whose build
leaves the binaries this uses). Needs helm-python-sdk (Helm's own Go SDK: lint, rendering) and
kubernetes-validate (the Kubernetes API's schemas), which .ci/test installs.

1. Helm's lint, and every manifest of several value sets against the Kubernetes API schemas,
   strictly (an unknown field is an error).
2. Every XMPPD_* variable the chart sets and every key of its configuration file is a
   documented configuration key (docs/configuration.md).
3. A release without the Postgres and Redis URLs fails to render, saying which are missing.
4. The chart's pods, run as processes. There is no Kubernetes here, so this runs what the
   rendered Deployments and the load-test Job would: their commands, their environment (the
   downward API and the Secret filled in), their volumes (the ConfigMap written out, and each
   role's cluster certificate Secret as cert-manager would fill it, from `xmppd certs init`), each pod
   on its own 127.0.42.x address, against this machine's Postgres and Redis. The cluster must
   become ready, and the Job's workers, pointed at the connection-manager pod where Kubernetes
   would give them its Service, must provision their accounts, chat through it without losing
   a message, and leave reports that merge. With WebSocket on, the connection-manager pod
   answers XEP-0156 host-meta on its ws and wss ports with the URL the values give, and
   upgrades to RFC 7395 XMPP over WebSocket (subprotocol `xmpp`, the origins allow-list and
   `consider_secure` as the values set them), spoken here over a raw socket.
5. Every value of values.yaml is documented in docs/kubernetes.md, and every documented value
   exists.
"""

import base64
import hashlib
import json
import math
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import unittest
import urllib.request
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "xmppd"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
# The image's programs (docker/Dockerfile): its entrypoint is xmppd.
PROGRAMS = {
    "xmppd": Path(os.environ.get("XMPPD_BIN", TARGET / "debug" / "xmppd")),
    "xmppd-loadtest": Path(os.environ.get("LOADTEST_BIN", TARGET / "debug" / "xmppd-loadtest")),
}
ENTRYPOINT = ["xmppd"]
POSTGRES = os.environ.get("XMPPD_TEST_POSTGRES_URL", "postgres://root@127.0.0.1:5432/postgres")
REDIS = os.environ.get("XMPPD_TEST_REDIS_URL", "redis://127.0.0.1:6379")
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
URLS = {"storage": {"url": "postgres://xmppd:secret@postgres:5432/xmppd"},
        "registry": {"url": "redis://redis:6379"}}


def render(values, name="demo"):
    """The release's objects by kind and name."""
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values, name=name, namespace="chat")
    objects = {}
    for path, text in files.items():
        if not path.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def of_kind(objects, kind):
    return [obj for (k, _), obj in sorted(objects.items()) if k == kind]


def documented_variables():
    text = (ROOT / "docs" / "configuration.md").read_text()
    # The Environment cell: the variable, sometimes with an example after it.
    return set(re.findall(r"\| `(XMPPD_[A-Z0-9_]+)`[^|]*\|", text))


def containers(spec):
    return spec.get("initContainers", []) + spec["containers"]


def pod_specs(objects):
    return [obj["spec"]["template"]["spec"] for obj in of_kind(objects, "Deployment") + of_kind(objects, "Job")]


VALUE_SETS = {
    "defaults": URLS,
    "own secret, certificate, load balancer": {
        "existingSecret": "xmppd-urls", "tls": {"secretName": "xmppd-tls"},
        "connectionManager": {"service": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}},
    },
    "WebSocket behind an Ingress, and wss": {
        **URLS, "tls": {"secretName": "xmppd-tls"},
        "websocket": {
            "enabled": True, "port": 8080, "tls": {"enabled": True, "port": 8443},
            "origins": ["https://chat.example.com"], "considerSecure": True,
            "ingress": {"enabled": True, "className": "nginx", "host": "chat.example.com",
                        "tls": {"secretName": "chat-example-com-tls"},
                        "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}}}},
    "wss only, Ingress to it": {**URLS, "websocket": {
        "tls": {"enabled": True}, "publicUrl": "wss://xmpp.example.com/ws", "path": "/ws",
        "ingress": {"enabled": True, "hostMeta": False,
                    "annotations": {"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS"}}}},
    "cluster certificates from cert-manager": {**URLS, "clusterTls": {
        "secretNames": {"router": "routers-tls"},
        "certManager": {"enabled": True, "issuerRef": {"name": "xmppd-ca", "kind": "ClusterIssuer"}}}},
    "network policies narrowed": {**URLS, "websocket": {"enabled": True}, "networkPolicy": {
        "clientsFrom": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"team": "observability"}},
                         "podSelector": {"matchLabels": {"app": "prometheus"}}}],
        "adminFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}],
        "redis": {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [6380]},
        "postgres": {"to": [{"podSelector": {"matchLabels": {"app": "postgres"}}}]},
        "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}], "ports": [{"port": 4317}]}]}},
    "load test": {**URLS, "loadtest": {
        "enabled": True, "users": 1000000, "workers": 4, "provision": True, "reportsClaim": "reports",
        "args": ["--duration", "5m", "--rate", "2000"]}},
}


class Manifests(unittest.TestCase):
    def test_lint_finds_no_error(self):
        for label, values in {"chart's own": None, **VALUE_SETS}.items():
            with self.subTest(values=label):
                result = helm.lint(str(CHART), values)
                self.assertEqual(result["errors"], [])
                self.assertFalse([m for m in result["messages"] if m["severity"] > 1], result["messages"])

    def test_every_object_is_valid_kubernetes(self):
        for label, values in VALUE_SETS.items():
            # cert-manager's resources are no part of the Kubernetes API's schemas: see
            # test_cert_manager_certificates_name_each_role.
            for obj in [o for o in render(values).values() if not o["apiVersion"].startswith("cert-manager.io/")]:
                for version in KUBERNETES_VERSIONS:
                    with self.subTest(values=label, object=obj["metadata"]["name"], kubernetes=version):
                        kubernetes_validate.validate(obj, version, strict=True)

    def test_every_variable_and_key_is_a_documented_setting(self):
        documented = documented_variables() | {"XMPPD_CONFIG"}
        for label, values in VALUE_SETS.items():
            objects = render(values)
            for spec in pod_specs(objects):
                for container in containers(spec):
                    for var in container.get("env", []):
                        if var["name"].startswith("XMPPD_"):
                            self.assertIn(var["name"], documented, label)
            config = of_kind(objects, "ConfigMap")[0]["data"]["xmppd.toml"]
            for section, keys in tomllib.loads(config).items():
                for key in keys:
                    self.assertIn(f"XMPPD_{section}__{key}".upper(), documented)

    def test_every_pod_logs_json_lines_by_default(self):
        config = of_kind(render(URLS), "ConfigMap")[0]["data"]["xmppd.toml"]
        self.assertEqual(tomllib.loads(config)["observability"]["log_format"], "json")

    def test_certificate_secret_reaches_the_client_and_admin_listeners_only(self):
        objects = render(VALUE_SETS["own secret, certificate, load balancer"])
        for deployment in of_kind(objects, "Deployment"):
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            names = {var["name"] for var in container["env"]}
            has_cert = "XMPPD_TLS__CERT_FILE" in names
            # The session replicas serve the admin API over TLS.
            self.assertEqual(has_cert, container["name"] in ("connection-manager", "session"))
        self.assertNotIn(("Secret", "demo-xmppd-urls"), objects)

    def test_monitoring_objects_are_optional_and_carry_the_chart_files(self):
        self.assertEqual(of_kind(render(URLS), "PrometheusRule"), [])
        self.assertEqual(of_kind(render(URLS), "ServiceMonitor"), [])
        self.assertEqual(dashboards(render(URLS)), [])
        values = {**URLS, "metrics": {
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
            "grafanaDashboard": {"enabled": True},
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}, "interval": "15s"}}}
        result = helm.lint(str(CHART), values)
        self.assertEqual(result["errors"], [])
        objects = render(values)
        [rule] = of_kind(objects, "PrometheusRule")
        self.assertEqual(rule["metadata"]["labels"]["release"], "prometheus")
        # The very rules promtool checks (services/xmppd/tests/cluster.rs).
        self.assertEqual(rule["spec"], yaml.safe_load((CHART / "files" / "alerts.yaml").read_text()))
        [monitor] = of_kind(objects, "ServiceMonitor")
        self.assertEqual(monitor["metadata"]["labels"]["release"], "prometheus")
        self.assertEqual(monitor["spec"]["endpoints"], [{"port": "http", "path": "/metrics", "interval": "15s"}])
        metrics = objects[("Service", "demo-xmppd-metrics")]
        self.assertEqual(monitor["spec"]["selector"]["matchLabels"],
                         {k: v for k, v in metrics["metadata"]["labels"].items()
                          if k.startswith("app.kubernetes.io/") and k not in ("app.kubernetes.io/version", "app.kubernetes.io/managed-by")})
        # Its Service finds every role's pods, on the port their metrics are served on.
        for component in ("connection-manager", "router", "session"):
            labels = deployment(objects, component)["spec"]["template"]["metadata"]["labels"]
            self.assertLessEqual(metrics["spec"]["selector"].items(), labels.items())
        self.assertEqual(metrics["spec"]["ports"], [{"name": "http", "port": 9090, "targetPort": "http"}])
        [dashboard] = dashboards(objects)
        self.assertEqual(dashboard["metadata"]["labels"]["grafana_dashboard"], "1")
        self.assertEqual(json.loads(dashboard["data"]["xmppd.json"]),
                         json.loads((CHART / "files" / "dashboard.json").read_text()))
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(dashboard, version, strict=True)

    def test_each_role_mounts_its_own_cluster_secret(self):
        objects = render(VALUE_SETS["cluster certificates from cert-manager"])
        secrets = {}
        for deployment in of_kind(objects, "Deployment"):
            spec = deployment["spec"]["template"]["spec"]
            container = spec["containers"][0]
            env = {var["name"]: var.get("value") for var in container["env"]}
            self.assertEqual(env["XMPPD_CLUSTER_TLS__DIR"], "/etc/xmppd-cluster-tls")
            [mount] = [m for m in container["volumeMounts"] if m["name"] == "cluster-tls"]
            self.assertEqual(mount["mountPath"], "/etc/xmppd-cluster-tls")
            [volume] = [v for v in spec["volumes"] if v["name"] == "cluster-tls"]
            secrets[container["name"]] = volume["secret"]["secretName"]
        self.assertEqual(secrets, {"connection-manager": "demo-xmppd-connection-manager-tls",
                                   "router": "routers-tls", "session": "demo-xmppd-session-tls"})

        plain = render({**URLS, "clusterTls": {"enabled": False}})
        for deployment in of_kind(plain, "Deployment"):
            spec = deployment["spec"]["template"]["spec"]
            env = {var["name"]: var.get("value") for var in spec["containers"][0]["env"]}
            self.assertEqual(env["XMPPD_CLUSTER_TLS__ENABLED"], "false")
            self.assertNotIn("cluster-tls", {v["name"] for v in spec["volumes"]})
        self.assertEqual(of_kind(render(URLS), "Certificate"), [])

    def test_cert_manager_certificates_name_each_role(self):
        objects = render(VALUE_SETS["cluster certificates from cert-manager"])
        certificates = {c["spec"]["secretName"]: c["spec"] for c in of_kind(objects, "Certificate")}
        self.assertEqual(set(certificates), {"demo-xmppd-connection-manager-tls", "routers-tls",
                                             "demo-xmppd-session-tls"})
        for secret, role in [("demo-xmppd-connection-manager-tls", "connection-manager"),
                             ("routers-tls", "router"), ("demo-xmppd-session-tls", "session")]:
            spec = certificates[secret]
            self.assertEqual(spec["uris"], [f"xmppd:role:{role}", "xmppd:node:*"])
            self.assertEqual(set(spec["usages"]), {"digital signature", "server auth", "client auth"})
            self.assertEqual(spec["issuerRef"], {"name": "xmppd-ca", "kind": "ClusterIssuer",
                                                 "group": "cert-manager.io"})
        with self.assertRaisesRegex(Exception, r"clusterTls\.certManager\.issuerRef\.name is required"):
            render({**URLS, "clusterTls": {"certManager": {"enabled": True}}})

    def test_missing_urls_are_named(self):
        with self.assertRaisesRegex(Exception, r"storage\.url .* or existingSecret is required"):
            render({})
        with self.assertRaisesRegex(Exception, r"registry\.url .* or existingSecret is required"):
            render({"storage": URLS["storage"]})

    def test_the_admin_service_reaches_the_api_and_console_of_every_session_replica(self):
        # Every replica serves the API (/api/v1/) and the web console (/console/) on one TLS
        # listener (docs/architecture.md), so one Service port over all replicas serves both.
        for port in (5285, 9443):
            objects = render({**URLS, "session": {"admin": {"port": port}}})
            session = deployment(objects, "session")["spec"]["template"]
            container = session["spec"]["containers"][0]
            env = {var["name"]: var.get("value") for var in container["env"]}
            self.assertEqual(env["XMPPD_ADMIN__LISTEN"], f"0.0.0.0:{port}")
            self.assertIn({"name": "admin", "containerPort": port}, container["ports"])
            service = objects[("Service", "demo-xmppd-admin")]["spec"]
            self.assertEqual(service["ports"], [{"name": "admin", "port": port, "targetPort": "admin", "appProtocol": "https"}])
            selected = service["selector"].items()
            self.assertLessEqual(selected, session["metadata"]["labels"].items())
            for other in ("connection-manager", "router"):
                labels = deployment(objects, other)["spec"]["template"]["metadata"]["labels"]
                self.assertFalse(selected <= labels.items(), other)
        objects = render({**URLS, "session": {"admin": {"enabled": False}}})
        self.assertNotIn(("Service", "demo-xmppd-admin"), objects)
        container = deployment(objects, "session")["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual({var["name"]: var.get("value") for var in container["env"]}["XMPPD_ADMIN__LISTEN"], "")

    def test_websocket_is_off_unless_enabled(self):
        objects = render(URLS)
        container = connection_manager(objects)
        env = {var["name"]: var.get("value") for var in container["env"]}
        # The server's own default is a loopback ws:// listener: the chart turns both off.
        self.assertEqual(env["XMPPD_LISTEN__WEBSOCKET"], "")
        self.assertEqual(env["XMPPD_LISTEN__WEBSOCKET_TLS"], "")
        self.assertFalse({"ws", "wss"} & {p["name"] for p in container["ports"]})
        self.assertFalse({"ws", "wss"} & {p["name"] for p in objects[("Service", "demo-xmppd-connection-manager")]["spec"]["ports"]})
        self.assertEqual(of_kind(objects, "Ingress"), [])

    def test_websocket_ports_line_up_from_listener_to_ingress(self):
        objects = render(VALUE_SETS["WebSocket behind an Ingress, and wss"])
        container = connection_manager(objects)
        env = {var["name"]: var.get("value") for var in container["env"]}
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        # Numbers reach Helm as floats: each must come out an integer, not 8080.0 or 8.08e+03.
        self.assertEqual((ports["ws"], ports["wss"]), (8080, 8443))
        self.assertTrue(all(type(port) is int for port in ports.values()), ports)
        self.assertEqual(env["XMPPD_LISTEN__WEBSOCKET"], "0.0.0.0:8080")
        self.assertEqual(env["XMPPD_LISTEN__WEBSOCKET_TLS"], "0.0.0.0:8443")
        self.assertEqual(env["XMPPD_WEBSOCKET__PATH"], "/xmpp-websocket")
        self.assertEqual(json.loads(env["XMPPD_WEBSOCKET__ORIGINS"]), ["https://chat.example.com"])
        self.assertEqual(env["XMPPD_WEBSOCKET__CONSIDER_SECURE"], "true")
        # TLS ends at the Ingress's host: that is the URL host-meta advertises.
        self.assertEqual(env["XMPPD_WEBSOCKET__PUBLIC_URL"], "wss://chat.example.com/xmpp-websocket")
        # Probes stay on the observability port.
        for probe in ("livenessProbe", "readinessProbe"):
            self.assertEqual(container[probe]["httpGet"]["port"], "http")

        service = objects[("Service", "demo-xmppd-connection-manager")]
        service_ports = {p["name"]: p for p in service["spec"]["ports"]}
        self.assertEqual((service_ports["ws"]["port"], service_ports["wss"]["port"]), (8080, 8443))
        for port in service_ports.values():
            self.assertIn(port["targetPort"], {p["name"] for p in container["ports"]})

        ingress = of_kind(objects, "Ingress")[0]
        self.assertEqual(ingress["spec"]["ingressClassName"], "nginx")
        self.assertEqual(ingress["spec"]["tls"], [{"secretName": "chat-example-com-tls",
                                                   "hosts": ["chat.example.com"]}])
        self.assertEqual(ingress["metadata"]["annotations"],
                         {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"})
        [rule] = ingress["spec"]["rules"]
        self.assertEqual(rule["host"], "chat.example.com")
        paths = {path["path"]: path["backend"]["service"] for path in rule["http"]["paths"]}
        self.assertEqual(set(paths), {"/xmpp-websocket", "/.well-known/host-meta", "/.well-known/host-meta.json"})
        for backend in paths.values():
            # TLS ends at the Ingress, which speaks plain ws:// to the pods.
            self.assertEqual(backend, {"name": service["metadata"]["name"], "port": {"name": "ws"}})

        wss_only = render(VALUE_SETS["wss only, Ingress to it"])
        env = {var["name"]: var.get("value") for var in connection_manager(wss_only)["env"]}
        self.assertEqual((env["XMPPD_LISTEN__WEBSOCKET"], env["XMPPD_LISTEN__WEBSOCKET_TLS"]), ("", "0.0.0.0:5281"))
        self.assertEqual(env["XMPPD_WEBSOCKET__PUBLIC_URL"], "wss://xmpp.example.com/ws")
        self.assertEqual(env["XMPPD_WEBSOCKET__CONSIDER_SECURE"], "false")
        [rule] = of_kind(wss_only, "Ingress")[0]["spec"]["rules"]
        self.assertNotIn("host", rule)
        self.assertEqual([(p["path"], p["backend"]["service"]["port"]["name"]) for p in rule["http"]["paths"]],
                         [("/ws", "wss")])

    def test_websocket_values_that_cannot_work_are_named(self):
        with self.assertRaisesRegex(Exception, r"websocket\.ingress\.enabled needs websocket\.enabled"):
            render({**URLS, "websocket": {"ingress": {"enabled": True}}})
        # The schema names a port out of range.
        with self.assertRaisesRegex(Exception, r"at '/websocket/port': maximum: got 70,000, want 65,535"):
            render({**URLS, "websocket": {"enabled": True, "port": 70000}})
        with self.assertRaisesRegex(Exception, r"at '/websocket/tls/port': minimum: got 0, want 1"):
            render({**URLS, "websocket": {"tls": {"enabled": True, "port": 0}}})

    def test_wrong_values_fail_with_the_schemas_message(self):
        cases = [
            ({"router": {"replicas": "two"}}, r"/router/replicas.*got string, want integer"),
            ({"domian": "chat.example.com"}, r"additional properties 'domian' not allowed"),
            ({"storage": {"url": "mysql://db/xmppd"}}, r"/storage/url"),
            ({"websocket": {"path": "xmpp"}}, r"/websocket/path"),
            ({"loadtest": {"tls": "ssl"}}, r"/loadtest/tls"),
            ({"session": {"autoscaling": {"maxReplicas": 0}}}, r"/session/autoscaling/maxReplicas"),
            ({"connectionManager": {"resources": {"limits": {"cpu": "two"}}}},
             r"/connectionManager/resources/limits/cpu"),
        ]
        for values, message in cases:
            with self.subTest(values=values):
                with self.assertRaisesRegex(Exception, message):
                    render({**URLS, **values})
                # helm lint reports the same, as install would refuse it.
                self.assertTrue(helm.lint(str(CHART), {**URLS, **values})["messages"])
        # The chart's own values and every value set of these tests pass it.
        with helm.Chart.load(str(CHART)) as chart:
            for values in VALUE_SETS.values():
                chart.validate_schema(values)

    def test_each_role_scales_with_its_own_autoscaler_when_asked(self):
        self.assertEqual(of_kind(render(URLS), "HorizontalPodAutoscaler"), [])
        pods_metric = {"type": "Pods", "pods": {"metric": {"name": "xmppd_edge_connections"},
                                                "target": {"type": "AverageValue", "averageValue": "20k"}}}
        objects = render({**URLS,
                          "connectionManager": {"autoscaling": {"enabled": True, "maxReplicas": 30,
                                                                "metrics": [pods_metric]}},
                          "session": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": 60}}})
        hpas = {h["spec"]["scaleTargetRef"]["name"]: h["spec"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
        self.assertEqual(set(hpas), {"demo-xmppd-connection-manager", "demo-xmppd-session"})
        edge = hpas["demo-xmppd-connection-manager"]
        self.assertEqual((edge["minReplicas"], edge["maxReplicas"]), (2, 30))
        self.assertEqual(edge["metrics"][0]["resource"]["target"]["averageUtilization"], 70)
        self.assertEqual(edge["metrics"][1], pods_metric)
        self.assertEqual(hpas["demo-xmppd-session"]["metrics"][0]["resource"]["target"]["averageUtilization"], 60)
        # The autoscaler owns the count of the Deployments it scales.
        self.assertNotIn("replicas", deployment(objects, "connection-manager")["spec"])
        self.assertEqual(deployment(objects, "router")["spec"]["replicas"], 2)
        for obj in of_kind(objects, "HorizontalPodAutoscaler"):
            for version in KUBERNETES_VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)

    def test_migrations_run_in_a_hook_job_before_the_pods_with_a_url_of_their_own(self):
        objects = render({**URLS, "migrations": {"url": "postgres://owner:secret@postgres:5432/xmppd"}})
        [secret] = hooks(objects, "pre-install", "Secret")
        [job] = hooks(objects, "pre-upgrade", "Job")
        self.assertEqual(hooks(objects, "pre-upgrade", "Secret"), [secret])
        self.assertLess(int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]),
                        int(job["metadata"]["annotations"]["helm.sh/hook-weight"]))
        self.assertEqual(secret["stringData"]["migrations-url"], "postgres://owner:secret@postgres:5432/xmppd")
        [container] = job["spec"]["template"]["spec"]["containers"]
        self.assertEqual(container["args"], ["migrate"])
        env = {var["name"]: var for var in container["env"]}
        self.assertEqual(env["XMPPD_STORAGE__URL"]["valueFrom"]["secretKeyRef"],
                         {"name": secret["metadata"]["name"], "key": "migrations-url"})
        # The replicas check the schema and never change it; the other roles have no store.
        for component in ("connection-manager", "router", "session"):
            env = {var["name"]: var.get("value")
                   for var in deployment(objects, component)["spec"]["template"]["spec"]["containers"][0]["env"]}
            self.assertEqual(env.get("XMPPD_STORAGE__MIGRATE"), "false" if component == "session" else None)
        # The storage URL serves when no other is given, and a Secret of one's own holds both.
        self.assertEqual(hooks(render(URLS), "pre-install", "Secret")[0]["stringData"]["migrations-url"],
                         URLS["storage"]["url"])
        own = render({"existingSecret": "xmppd-urls"})
        self.assertEqual(hooks(own, "pre-install", "Secret"), [])
        [job] = hooks(own, "pre-install", "Job")
        ref = job["spec"]["template"]["spec"]["containers"][0]["env"][1]["valueFrom"]["secretKeyRef"]
        self.assertEqual(ref, {"name": "xmppd-urls", "key": "migrations-url"})
        # Off: no Job, and the replicas migrate at start.
        off = render({**URLS, "migrations": {"job": False}})
        self.assertEqual(hooks(off, "pre-install", "Job"), [])
        env = {var["name"] for var in deployment(off, "session")["spec"]["template"]["spec"]["containers"][0]["env"]}
        self.assertNotIn("XMPPD_STORAGE__MIGRATE", env)

    def test_pods_spread_over_zones_and_nodes_unless_told_otherwise(self):
        objects = render(URLS)
        for component in ("connection-manager", "router", "session"):
            spec = deployment(objects, component)["spec"]["template"]["spec"]
            selector = deployment(objects, component)["spec"]["selector"]["matchLabels"]
            constraints = spec["topologySpreadConstraints"]
            self.assertEqual([c["topologyKey"] for c in constraints],
                             ["topology.kubernetes.io/zone", "kubernetes.io/hostname"])
            for constraint in constraints:
                self.assertEqual(constraint["whenUnsatisfiable"], "ScheduleAnyway")
                self.assertEqual(constraint["labelSelector"]["matchLabels"], selector)
            [preferred] = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            self.assertEqual(preferred["podAffinityTerm"]["labelSelector"]["matchLabels"], selector)
        own_affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["chat"]}]}]}}}
        objects = render({**URLS, "router": {"affinity": own_affinity}, "spread": {"enabled": False}})
        self.assertEqual(deployment(objects, "router")["spec"]["template"]["spec"]["affinity"], own_affinity)
        spec = deployment(objects, "session")["spec"]["template"]["spec"]
        self.assertNotIn("affinity", spec)
        self.assertNotIn("topologySpreadConstraints", spec)

    def test_probes_prestop_and_grace_period_match_each_roles_drain(self):
        objects = render(URLS)
        for component, pre_stop, grace in [("connection-manager", 5, 20), ("router", 2, 15), ("session", 2, 15)]:
            spec = deployment(objects, component)["spec"]["template"]["spec"]
            container = spec["containers"][0]
            self.assertEqual(container["lifecycle"]["preStop"], {"sleep": {"seconds": pre_stop}})
            self.assertEqual(spec["terminationGracePeriodSeconds"], grace)
            startup = container["startupProbe"]
            self.assertEqual(startup["httpGet"], {"path": "/healthz", "port": "http"})
            self.assertGreaterEqual(startup["periodSeconds"] * startup["failureThreshold"], 60)
        with self.assertRaisesRegex(Exception, r"connectionManager\.terminationGracePeriodSeconds \(12\) must be "
                                               r"at least connectionManager\.preStopSeconds \+ 10 s of drain = 15"):
            render({**URLS, "connectionManager": {"terminationGracePeriodSeconds": 12}})
        with self.assertRaisesRegex(Exception, r"session\.terminationGracePeriodSeconds \(15\) must be at least"):
            render({**URLS, "session": {"preStopSeconds": 20}})

    def test_worker_threads_follow_the_cpu_limit(self):
        objects = render({**URLS, "router": {"resources": {"limits": {"cpu": "1500m"}}},
                          "session": {"resources": {"requests": {"cpu": "250m"}, "limits": None}}})
        router = deployment(objects, "router")["spec"]["template"]["spec"]["containers"][0]
        [threads] = [var for var in router["env"] if var["name"] == "XMPPD_SERVER__WORKER_THREADS"]
        self.assertEqual(threads["valueFrom"]["resourceFieldRef"],
                         {"containerName": "router", "resource": "limits.cpu", "divisor": "1"})
        # Without a limit, the process's own default: one thread per CPU it may use.
        session = deployment(objects, "session")["spec"]["template"]["spec"]["containers"][0]
        self.assertNotIn("XMPPD_SERVER__WORKER_THREADS", {var["name"] for var in session["env"]})

    def test_helm_test_pod_makes_two_accounts_and_checks_a_message(self):
        objects = render(URLS)
        [pod] = hooks(objects, "test", "Pod")
        [secret] = hooks(objects, "test", "Secret")
        self.assertEqual(len(secret["stringData"]["password"]), 24)
        spec = pod["spec"]
        self.assertEqual([c["args"][:2] for c in spec["initContainers"]],
                         [["user", "remove"], ["user", "add"]] * 2)
        self.assertEqual([c["args"][-1] for c in spec["initContainers"]],
                         ["helm-test-0@localhost"] * 2 + ["helm-test-1@localhost"] * 2)
        [check] = spec["containers"]
        self.assertEqual(check["command"], ["xmppd-loadtest"])
        self.assertEqual(check["args"][0], "check")
        self.assertEqual(check["args"][check["args"].index("--target") + 1], "demo-xmppd-connection-manager:5222")
        self.assertNotIn("Pod", {kind for kind, _ in render({**URLS, "tests": {"enabled": False}})})

    def test_network_policies_open_each_role_only_to_its_peers(self):
        objects = render(URLS)
        policies = {p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]: p["spec"]
                    for p in of_kind(objects, "NetworkPolicy")}
        self.assertEqual(set(policies), {"connection-manager", "router", "session"})

        def peers(rule):
            """The components a rule names, or the peers as written when they are not ours."""
            return sorted(peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
                          or json.dumps(peer, sort_keys=True) for peer in rule.get("from", rule.get("to", [])))

        def ports(rule):
            return sorted(str(p["port"]) for p in rule["ports"])

        for component, spec in policies.items():
            self.assertEqual(spec["policyTypes"], ["Ingress", "Egress"])
            container = deployment(objects, component)["spec"]["template"]["spec"]["containers"][0]
            # Every port a rule opens is one the pod serves, by name.
            served = {p["name"] for p in container["ports"]}
            for rule in spec["ingress"]:
                self.assertLessEqual(set(ports(rule)), served, component)
            ingress = {tuple(ports(rule)): peers(rule) for rule in spec["ingress"]}
            self.assertEqual(ingress[("http",)], ['{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}'])
            egress = {tuple(ports(rule)): peers(rule) for rule in spec["egress"]}
            self.assertEqual(egress[("53", "53")], ['{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}'])
            self.assertEqual(egress[("6379",)], [])
            # Only the replicas open the store.
            self.assertEqual(("5432",) in egress, component == "session")
            with self.subTest(component=component):
                expected_in = {"connection-manager": None, "router": ["connection-manager"],
                               "session": ["connection-manager", "router"]}[component]
                self.assertEqual(ingress.get(("grpc",)), expected_in)
                expected_out = {"connection-manager": ["router", "session"], "router": ["session"],
                                "session": None}[component]
                self.assertEqual(egress.get(("7000",)), expected_out)
        # Clients reach the connection-managers' client ports from anywhere, and nothing else.
        self.assertEqual(ingress_of(policies["connection-manager"], "c2s"), {"ports": [
            {"port": "c2s", "protocol": "TCP"}, {"port": "c2s-tls", "protocol": "TCP"}]})
        self.assertEqual(ingress_of(policies["session"], "admin")["from"], [{"podSelector": {}}])
        for component in ("router", "session"):
            self.assertIsNone(ingress_of(policies[component], "c2s"))

        narrowed = render(VALUE_SETS["network policies narrowed"])
        policies = {p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]: p["spec"]
                    for p in of_kind(narrowed, "NetworkPolicy")}
        clients = ingress_of(policies["connection-manager"], "c2s")
        self.assertEqual([p["port"] for p in clients["ports"]], ["c2s", "c2s-tls", "ws"])
        self.assertEqual(clients["from"], [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}])
        self.assertEqual(ingress_of(policies["session"], "admin")["from"],
                         [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}])
        for component, spec in policies.items():
            self.assertEqual(ingress_of(spec, "http")["from"][0]["podSelector"], {"matchLabels": {"app": "prometheus"}})
            self.assertIn({"ports": [{"port": 6380, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}]},
                          spec["egress"])
            self.assertEqual(spec["egress"][-1], {"to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}], "ports": [{"port": 4317}]})
        self.assertIn({"ports": [{"port": 5432, "protocol": "TCP"}], "to": [{"podSelector": {"matchLabels": {"app": "postgres"}}}]},
                      policies["session"]["egress"])
        self.assertEqual(of_kind(render({**URLS, "networkPolicy": {"enabled": False}}), "NetworkPolicy"), [])

    def test_no_pod_mounts_a_service_account_token(self):
        objects = render(VALUE_SETS["load test"])
        specs = pod_specs(objects) + [pod["spec"] for pod in of_kind(objects, "Pod")]
        self.assertEqual(len(specs), 6)
        for spec in specs:
            self.assertIs(spec.get("automountServiceAccountToken"), False)

    def test_every_container_has_requests_and_limits(self):
        objects = render(VALUE_SETS["load test"])
        for spec in pod_specs(objects) + [pod["spec"] for pod in of_kind(objects, "Pod")]:
            for container in containers(spec):
                with self.subTest(container=container["name"]):
                    resources = container["resources"]
                    self.assertEqual(set(resources), {"requests", "limits"})
                    self.assertEqual(set(resources["limits"]), {"cpu", "memory"})
                    self.assertEqual(set(resources["requests"]), {"cpu", "memory"})

    def test_the_client_service_keeps_source_addresses_where_its_type_allows(self):
        def policy(service):
            objects = render({**URLS, "connectionManager": {"service": service}})
            return objects[("Service", "demo-xmppd-connection-manager")]["spec"].get("externalTrafficPolicy")
        # A ClusterIP Service has none (the API refuses one).
        self.assertIsNone(policy({}))
        self.assertEqual(policy({"type": "LoadBalancer"}), "Local")
        self.assertEqual(policy({"type": "NodePort"}), "Local")
        self.assertEqual(policy({"type": "LoadBalancer", "externalTrafficPolicy": "Cluster"}), "Cluster")

    def test_every_connection_manager_reads_one_decoy_secret(self):
        objects = render(URLS)
        secret = objects[("Secret", "demo-xmppd-decoy")]["stringData"]["decoy-secret"]
        self.assertGreaterEqual(len(secret), 32)
        self.assertNotEqual(secret, render(URLS)[("Secret", "demo-xmppd-decoy")]["stringData"]["decoy-secret"],
                            "made at random, not written in the chart")
        for component in ("connection-manager", "router", "session"):
            spec = deployment(objects, component)["spec"]["template"]["spec"]
            env = {var["name"]: var.get("value") for var in spec["containers"][0]["env"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            if component != "connection-manager":
                self.assertNotIn("XMPPD_AUTH__DECOY_SECRET_FILE", env)
                self.assertNotIn("decoy-secret", volumes)
                continue
            [mount] = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "decoy-secret"]
            self.assertEqual(env["XMPPD_AUTH__DECOY_SECRET_FILE"], f"{mount['mountPath']}/decoy-secret")
            self.assertEqual(volumes["decoy-secret"]["secret"]["secretName"], "demo-xmppd-decoy")
        own = render({**URLS, "decoySecret": {"existingSecret": "our-decoy"}})
        self.assertNotIn(("Secret", "demo-xmppd-decoy"), own)
        spec = deployment(own, "connection-manager")["spec"]["template"]["spec"]
        self.assertEqual({v["name"]: v for v in spec["volumes"]}["decoy-secret"]["secret"]["secretName"], "our-decoy")

    def test_load_test_job_splits_one_population(self):
        objects = render(VALUE_SETS["load test"])
        job = objects[("Job", "demo-xmppd-loadtest")]
        self.assertEqual(job["spec"]["completionMode"], "Indexed")
        self.assertEqual(job["spec"]["completions"], 4)
        self.assertEqual(job["spec"]["parallelism"], 4)
        service = objects[("Service", "demo-xmppd-connection-manager")]["metadata"]["name"]
        for container in containers(job["spec"]["template"]["spec"]):
            args = container["args"]
            self.assertEqual(args[args.index("--target") + 1], f"{service}:5222")
            self.assertIn("--allow-remote", args)
            self.assertEqual(args[args.index("--workers") + 1], "4")
            self.assertEqual(args[args.index("--users") + 1], "1000000")
            self.assertIn("JOB_COMPLETION_INDEX", {var["name"] for var in container["env"]})
        self.assertNotIn(("Job", "demo-xmppd-loadtest"), render(URLS))
        direct = render({**URLS, "loadtest": {"enabled": True, "tls": "direct"}})
        args = direct[("Job", "demo-xmppd-loadtest")]["spec"]["template"]["spec"]["containers"][0]["args"]
        self.assertEqual(args[args.index("--target") + 1], f"{service}:5223")


def hooks(objects, hook, kind):
    """The objects of `kind` that run as Helm's `hook`, in the order of their weights."""
    found = [obj for obj in of_kind(objects, kind)
             if hook in obj["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(",")]
    return sorted(found, key=lambda obj: int(obj["metadata"]["annotations"].get("helm.sh/hook-weight", "0")))


def ingress_of(policy, port):
    """The ingress rule of a NetworkPolicy's spec that opens the named `port`, if any."""
    rules = [rule for rule in policy["ingress"] if port in [p["port"] for p in rule["ports"]]]
    return rules[0] if rules else None


def deployment(objects, component):
    return objects[("Deployment", f"demo-xmppd-{component}")]


def dashboards(objects):
    return [obj for obj in of_kind(objects, "ConfigMap") if obj["metadata"]["name"].endswith("-dashboard")]


def connection_manager(objects):
    """The connection-manager's container."""
    deployment = [d for d in of_kind(objects, "Deployment")
                  if d["metadata"]["labels"]["app.kubernetes.io/component"] == "connection-manager"][0]
    return deployment["spec"]["template"]["spec"]["containers"][0]


def value_paths(values, prefix=""):
    """The dotted names of values.yaml's settings: a map's keys, down to lists, scalars and
    empty maps."""
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from value_paths(value, f"{name}.")
        yield name


def documented_values():
    """The values named in the first column of docs/kubernetes.md's Values table; `.x` after a
    name stands for the sibling x (`router.nodeSelector`, `.tolerations`)."""
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    table = text.split("## Values", 1)[1].split("\n## ", 1)[0]
    names = set()
    for row in re.findall(r"^\| ([^|]+) \|", table, re.M):
        first = None
        for name in re.findall(r"`([^`]+)`", row):
            if name.startswith(".") and first:
                name = first.rsplit(".", 1)[0] + name
            first = first or name
            names.add(name)
    return names


class Docs(unittest.TestCase):
    def test_every_value_is_documented_and_every_documented_value_exists(self):
        values = yaml.safe_load((CHART / "values.yaml").read_text())
        paths = set(value_paths(values))
        documented = documented_values()
        for path in paths:
            # A map documented as a whole (resources, annotations) covers its keys.
            parts = path.split(".")
            prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
            is_map = isinstance(values_at(values, path), dict) and values_at(values, path)
            if not is_map:
                self.assertTrue(prefixes & documented, f"{path} is not in docs/kubernetes.md")
        self.assertEqual(documented - paths, set(), "documented values that values.yaml lacks")


    def test_every_metric_and_alert_the_chart_uses_is_documented(self):
        docs = (ROOT / "docs" / "observability.md").read_text()
        alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())["groups"][0]["rules"]
        dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
        exprs = [rule["expr"] for rule in alerts]
        exprs += [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
        for expr in exprs:
            for name in re.findall(r"\b((?:xmppd|process)_[a-z_]+)", expr):
                family = re.sub(r"_(bucket|count|sum|total)$", "", name)
                with self.subTest(metric=name):
                    self.assertTrue(f"`{family}`" in docs or f"`{family}_total`" in docs,
                                    f"{name} is not in docs/observability.md")
        for rule in alerts:
            self.assertIn(f"`{rule['alert']}`", docs, "an alert without its runbook line")

    def test_every_alert_has_its_runbook_entry(self):
        alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())["groups"][0]["rules"]
        operations = (ROOT / "docs" / "operations.md").read_text()
        entries = re.findall(r"^### `(Xmppd\w+)`$", operations, re.M)
        self.assertEqual(sorted(entries), sorted(rule["alert"] for rule in alerts))


def values_at(values, path):
    for part in path.split("."):
        values = values[part]
    return values


class Pod:
    """One pod of a rendered workload, run as a process on its own loopback address."""

    def __init__(self, name, spec, container, ip, sources, workdir, job_index=None):
        self.name, self.container, self.ip = name, container, ip
        # What SIGTERM leaves the process: the grace period less the preStop sleep before it.
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        self.grace = spec.get("terminationGracePeriodSeconds", 30) - pre_stop
        self.mounts = {}
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            source = volumes[mount["name"]]
            # A claim is one folder for every pod that mounts it; anything else is the pod's own.
            if "persistentVolumeClaim" in source:
                host = workdir / "claims" / source["persistentVolumeClaim"]["claimName"]
            else:
                host = workdir / name / mount["name"]
            host.mkdir(parents=True, exist_ok=True)
            if "configMap" in source:
                for key, text in sources["configmaps"][source["configMap"]["name"]].items():
                    (host / key).write_text(text)
            if "secret" in source:
                for key, text in sources["secrets"][source["secret"]["secretName"]].items():
                    (host / key).write_text(text)
            self.mounts[mount["mountPath"]] = str(host)
        self.env = {"PATH": os.environ["PATH"]}
        for var in container.get("env", []):
            self.env[var["name"]] = self.value_of(var, sources, job_index)
        self.argv = [self.local(arg) for arg in (container.get("command") or ENTRYPOINT) + container.get("args", [])]
        self.argv[0] = str(PROGRAMS[self.argv[0]])
        self.log = workdir / f"{name}.log"

    def value_of(self, var, sources, job_index):
        if "value" in var:
            return self.local(var["value"])
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            return sources["secrets"][ref["name"]][ref["key"]]
        if "resourceFieldRef" in source:
            # The downward API rounds a CPU quantity up to the divisor (1: whole CPUs).
            ref = source["resourceFieldRef"]
            assert (ref["resource"], ref["divisor"]) == ("limits.cpu", "1"), ref
            return str(math.ceil(cpu_quantity(self.container["resources"]["limits"]["cpu"])))
        field = source["fieldRef"]["fieldPath"]
        return {"status.podIP": self.ip,
                "metadata.annotations['batch.kubernetes.io/job-completion-index']": str(job_index)}[field]

    def local(self, text):
        """What a value means inside this pod: $(VAR) expanded, the pod's own address for the
        wildcard, and its volumes where their mount paths are."""
        text = re.sub(r"\$\((\w+)\)", lambda m: self.env.get(m.group(1), m.group(0)), text)
        text = text.replace("0.0.0.0:", f"{self.ip}:")
        # The longest first, as a mount inside another's path (or beside it, sharing its
        # prefix) is its own volume.
        for path, host in sorted(self.mounts.items(), key=lambda mount: -len(mount[0])):
            text = text.replace(path, host)
        return text

    def start(self):
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        return self

    def stop(self):
        """SIGTERM, as Kubernetes stops a pod after its preStop hook; it must exit within
        what is left of the grace period."""
        grace = self.grace
        self.process.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.name} still running {grace} s after SIGTERM:\n{self.log.read_text()}")

    def wait_ready(self, timeout=60):
        probe = self.container["readinessProbe"]["httpGet"]
        port = {p["name"]: p["containerPort"] for p in self.container["ports"]}[probe["port"]]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://{self.ip}:{port}{probe['path']}", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready in {timeout} s:\n{self.log.read_text()}")

    def run(self, timeout=120):
        """Runs to the end, as a Job's container does; one still running after `timeout` is
        killed and fails the test."""
        self.start()
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.name} still running after {timeout} s:\n{self.log.read_text()}")
        return code, self.log.read_text()


def cpu_quantity(quantity):
    """A Kubernetes CPU quantity in CPUs: 2, "2", "1.5", "500m"."""
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def plain_to(ip, port):
    return socket.create_connection((ip, port), timeout=10)


def read_head(stream):
    """An HTTP response's status and headers (names lowercased), and what followed them."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = stream.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, value = line.split(":", 1)
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, rest


def http_request(stream, method, path, headers=None):
    """One HTTP/1.1 request on a fresh connection: the status, headers and body (read to the
    end: the server closes after answering)."""
    headers = {"Connection": "close", **(headers or {})}
    lines = [f"{method} {path} HTTP/1.1", "Host: chat.test", *(f"{k}: {v}" for k, v in headers.items())]
    with stream:
        stream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, response_headers, body = read_head(stream)
        while chunk := stream.recv(4096):
            body += chunk
    return status, response_headers, body.decode()


def websocket_headers(origin=None, protocol="xmpp", key="dGhlIHNhbXBsZSBub25jZQ=="):
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": key}
    if protocol:
        headers["Sec-WebSocket-Protocol"] = protocol
    if origin:
        headers["Origin"] = origin
    return headers


def websocket_upgrade(test, stream, path, origin=None):
    """The opening handshake (RFC 6455 §4), checked; the response's headers."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", "Host: chat.test",
             *(f"{k}: {v}" for k, v in websocket_headers(origin, key=key).items())]
    stream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    status, headers, rest = read_head(stream)
    test.assertEqual(status, 101, headers)
    test.assertEqual(headers["upgrade"].lower(), "websocket")
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    test.assertEqual(headers["sec-websocket-accept"], accept.decode())
    test.assertEqual(rest, b"", "the server spoke before the client's <open/>")
    return headers


def send_frame(stream, text):
    """One masked text frame, as a client must send (RFC 6455 §5.2)."""
    payload = text.encode()
    mask = os.urandom(4)
    if len(payload) < 126:
        head = struct.pack("!BB", 0x81, 0x80 | len(payload))
    else:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
    stream.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def receive_exactly(stream, size):
    data = b""
    while len(data) < size:
        chunk = stream.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    return data


def receive_message(stream):
    """The next text message (unfragmented, unmasked as a server sends); pings are answered."""
    while True:
        first, second = receive_exactly(stream, 2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", receive_exactly(stream, 2))[0]
        elif size == 127:
            size = struct.unpack("!Q", receive_exactly(stream, 8))[0]
        payload = receive_exactly(stream, size)
        opcode = first & 0x0F
        if opcode == 0x9:  # ping: pong with its payload (masked, from a client)
            mask = os.urandom(4)
            stream.sendall(struct.pack("!BB", 0x8A, 0x80 | size) + mask
                           + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            continue
        assert opcode == 0x1 and first & 0x80, f"expected a whole text frame, got opcode {opcode}"
        return payload.decode()


class PodsAsProcesses(unittest.TestCase):
    def setUp(self):
        self.database = f"xmppd_chart_{os.getpid()}"
        self.prefix = f"xmppd-chart-{os.getpid()}:"
        subprocess.run(["psql", "-q", POSTGRES, "-c", f"CREATE DATABASE {self.database}"], check=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="xmppd-chart-"))
        self.pods = []

    def tearDown(self):
        # The edges first, then the routers, then the replicas: the reverse of their start.
        failures = []
        for pod in reversed(self.pods):
            try:
                pod.stop()
            except AssertionError as failure:
                failures.append(str(failure))
        self.clean_up()
        self.assertEqual(failures, [])

    def clean_up(self):
        subprocess.run(["psql", "-q", POSTGRES, "-c", f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)"])
        keys = subprocess.run(["redis-cli", "-u", REDIS, "--scan", "--pattern", f"{self.prefix}*"],
                              capture_output=True, text=True).stdout.split()
        if keys:
            subprocess.run(["redis-cli", "-u", REDIS, "del", *keys], capture_output=True)
        shutil.rmtree(self.workdir)

    def start_cluster(self, objects):
        """The release's three Deployments, one pod each, ready: the pods by component, what
        their environment and volumes draw from, and the addresses left for more pods."""
        sources = {
            "configmaps": {o["metadata"]["name"]: o["data"] for o in of_kind(objects, "ConfigMap")},
            "secrets": {o["metadata"]["name"]: o["stringData"] for o in of_kind(objects, "Secret")},
        }
        sources["secrets"].update(self.cluster_secrets())
        addresses = iter(f"127.0.42.{i}" for i in range(10, 250))
        # Helm's pre-install hooks, Jobs, run to the end before anything else starts.
        for job in hooks(objects, "pre-install", "Job"):
            spec = job["spec"]["template"]["spec"]
            for container in containers(spec):
                code, log = Pod(f"hook-{container['name']}", spec, container, next(addresses),
                                sources, self.workdir).run()
                self.assertEqual(code, 0, log)
        by_component = {}
        # Replicas first, then the routers that find them, then the edges that attach to those.
        for component in ["session", "router", "connection-manager"]:
            deployment = objects[("Deployment", f"demo-xmppd-{component}")]
            spec = deployment["spec"]["template"]["spec"]
            pod = Pod(component, spec, spec["containers"][0], next(addresses), sources, self.workdir)
            self.pods.append(pod.start())
            pod.wait_ready()
            by_component[component] = pod
        return by_component, sources, addresses

    def cluster_secrets(self):
        """The roles' cluster certificate Secrets, as cert-manager would fill them: made here
        by `xmppd certs init`, under the chart's default Secret names."""
        certs = self.workdir / "cluster-tls"
        subprocess.run([str(PROGRAMS["xmppd"]), "certs", "init", "--dir", str(certs)], check=True,
                       capture_output=True)
        return {f"demo-xmppd-{role}-tls": {name: (certs / role / name).read_text()
                                           for name in ("ca.crt", "tls.crt", "tls.key")}
                for role in ("connection-manager", "router", "session")}

    def run_to_end(self, name, spec, address, sources, service_to_pod, job_index=None):
        """A pod that runs to its end (a Job's, a test's): its init containers, then its
        containers, one after another, as a pod runs them; each step's exit code and log. A
        step that hangs ends the pod with its log. `service_to_pod` is a Service's name and
        the pod address its name would lead to."""
        service, pod_address = service_to_pod
        outcome = []
        for step in containers(spec):
            step = {**step, "args": [arg.replace(f"{service}:", f"{pod_address}:") for arg in step["args"]]}
            pod = Pod(f"{name}-{step['name']}", spec, step, address, sources, self.workdir, job_index)
            try:
                outcome.append(pod.run())
            except AssertionError as hung:
                outcome.append((None, str(hung)))
                break
        return outcome

    def test_the_connection_manager_serves_xmpp_over_websocket_and_host_meta(self):
        storage = POSTGRES.rsplit("/", 1)[0] + "/" + self.database
        # The security defaults stay on (auth.require_tls): ws:// streams are offered SASL only
        # because considerSecure says TLS ended at the Ingress.
        objects = render({
            "domain": "chart.test", "storage": {"url": storage}, "registry": {"url": REDIS},
            "config": f'[server]\nworker_threads = 1\n[registry]\nkey_prefix = "{self.prefix}"\n',
            "connectionManager": {"replicas": 1}, "router": {"replicas": 1}, "session": {"replicas": 1},
            "websocket": {"enabled": True, "tls": {"enabled": True},
                          "origins": ["https://chat.test"], "considerSecure": True,
                          "ingress": {"enabled": True, "host": "chat.test",
                                      "tls": {"secretName": "chat-test-tls"}}},
        })
        pods, _, _ = self.start_cluster(objects)
        edge = pods["connection-manager"]
        ports = {p["name"]: p["containerPort"] for p in edge.container["ports"]}
        plain = lambda: plain_to(edge.ip, ports["ws"])

        def secure():
            # The pod's own certificate (self-signed: no tls.secretName), with HTTP's ALPN as a
            # browser offers it.
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            context.set_alpn_protocols(["http/1.1"])
            return context.wrap_socket(plain_to(edge.ip, ports["wss"]), server_hostname="chat.test")

        url = "wss://chat.test/xmpp-websocket"
        for label, connect in [("ws", plain), ("wss", secure)]:
            with self.subTest(listener=label):
                status, headers, body = http_request(connect(), "GET", "/.well-known/host-meta")
                self.assertEqual(status, 200, body)
                self.assertEqual(headers["content-type"], "application/xrd+xml")
                self.assertIn(f"<Link rel='urn:xmpp:alt-connections:websocket' href='{url}'/>", body)
                status, headers, body = http_request(connect(), "GET", "/.well-known/host-meta.json")
                self.assertEqual(status, 200, body)
                self.assertEqual(json.loads(body)["links"],
                                 [{"rel": "urn:xmpp:alt-connections:websocket", "href": url}])

                # RFC 7395: the upgrade, the subprotocol, and the stream's first messages.
                stream = connect()
                headers = websocket_upgrade(self, stream, "/xmpp-websocket", origin="https://chat.test")
                self.assertEqual(headers["sec-websocket-protocol"], "xmpp")
                send_frame(stream, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='chart.test' version='1.0'/>")
                opened = receive_message(stream)
                self.assertRegex(opened, r"^<open [^>]*xmlns='urn:ietf:params:xml:ns:xmpp-framing'")
                self.assertIn("from='chart.test'", opened)
                features = receive_message(stream)
                self.assertIn("<stream:features", features)
                # consider_secure reached the server: SASL is offered on ws:// under require_tls.
                self.assertIn("<mechanism>SCRAM-SHA-256</mechanism>", features)
                send_frame(stream, "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
                self.assertIn("<close", receive_message(stream))
                stream.close()

                # The origins allow-list reached the server too; so does the path.
                status, _, _ = http_request(connect(), "GET", "/xmpp-websocket",
                                            websocket_headers(origin="https://elsewhere.example"))
                self.assertEqual(status, 403)
                status, _, _ = http_request(connect(), "GET", "/xmpp-websocket",
                                            websocket_headers(protocol=None))
                self.assertEqual(status, 400)

    def test_the_release_serves_and_its_load_test_job_chats_through_it(self):
        storage = POSTGRES.rsplit("/", 1)[0] + "/" + self.database
        # What a load test needs of the server (docs/configuration.md, "Relaxing the security
        # defaults"), and this run's own Redis keys.
        config = f"""
[server]
worker_threads = 1
[auth]
require_tls = false
registration = true
registrations_per_ip_per_hour = 0
failures_per_ip_per_minute = 0
failures_per_account_per_minute = 0
failures_per_account_per_ip_per_minute = 0
[limits]
connections_per_ip = 0
stanzas_per_second = 0
[registry]
key_prefix = "{self.prefix}"
"""
        workers = 2
        objects = render({
            "domain": "chart.test", "storage": {"url": storage}, "registry": {"url": REDIS},
            "config": config,
            "connectionManager": {"replicas": 1}, "router": {"replicas": 1}, "session": {"replicas": 1},
            "loadtest": {"enabled": True, "workers": workers, "users": 20, "provision": True,
                         "reportsClaim": "reports",
                         "args": ["--duration", "3s", "--login-rate", "100"]},
        })
        by_component, sources, addresses = self.start_cluster(objects)

        job = objects[("Job", "demo-xmppd-loadtest")]
        service = objects[("Service", "demo-xmppd-connection-manager")]["metadata"]["name"]
        edge = by_component["connection-manager"].ip
        results = {}

        def worker(index, address):
            spec = job["spec"]["template"]["spec"]
            results[index] = self.run_to_end(f"loadtest-{index}", spec, address, sources,
                                             (service, edge), index)

        threads = [threading.Thread(target=worker, args=(i, next(addresses))) for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for index, outcome in sorted(results.items()):
            for code, log in outcome:
                self.assertEqual(code, 0, f"worker {index}:\n{log}")

        reports = sorted((self.workdir / "claims" / "reports").glob("report-*.json"))
        self.assertEqual([r.name for r in reports], [f"report-{i}.json" for i in range(workers)])
        merged = self.workdir / "merged.json"
        subprocess.run([str(PROGRAMS["xmppd-loadtest"]), "merge", *map(str, reports), "--json", str(merged)],
                       check=True, capture_output=True)
        report = json.loads(merged.read_text())
        self.assertEqual(sorted(report["worker_indexes"]), list(range(workers)))
        counters = {}
        for phase in report["phases"]:
            self.assertEqual(phase["errors"], {}, phase["name"])
            for key, value in phase["counters"].items():
                counters[key] = counters.get(key, 0) + value
        self.assertEqual(counters["logins"], 20)
        self.assertGreater(counters["messages_sent"], 0)
        self.assertEqual(counters["messages_delivered"], counters["messages_sent"])

        # `helm test`, twice (its accounts are made afresh each time): the test hook's Pod
        # makes its accounts and its check logs them in and chats, through the same pod.
        [test] = hooks(objects, "test", "Pod")
        for run in range(2):
            outcome = self.run_to_end(f"helm-test-{run}", test["spec"], next(addresses), sources, (service, edge))
            self.assertEqual([code for code, _ in outcome], [0] * 5, outcome)
            self.assertIn("ok: helm-test-0@chart.test/", outcome[-1][1])
        # It fails when the message cannot be delivered: no connection-manager to log in at.
        by_component["connection-manager"].stop()
        self.pods.remove(by_component["connection-manager"])
        outcome = self.run_to_end("helm-test-down", test["spec"], next(addresses), sources, (service, edge))
        self.assertNotEqual(outcome[-1][0], 0, outcome)


if __name__ == "__main__":
    sys.exit(unittest.main())
