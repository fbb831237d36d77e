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
   downward API and the Secret filled in), their volumes (the ConfigMap written out), each pod
   on its own 127.0.42.x address, against this machine's Postgres and Redis. The cluster must
   become ready, and the Job's workers, pointed at the connection-manager pod where Kubernetes
   would give them its Service, must provision their accounts, chat through it without losing
   a message, and leave reports that merge.
"""

import json
import os
import re
import shutil
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
    return set(re.findall(r"\| `(XMPPD_[A-Z0-9_]+)` \|", text))


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
    "load test": {**URLS, "loadtest": {
        "enabled": True, "users": 1000000, "workers": 4, "provision": True, "reportsClaim": "reports",
        "args": ["--duration", "5m", "--rate", "2000"]}},
}


class Manifests(unittest.TestCase):
    def test_lint_finds_no_error(self):
        result = helm.lint(str(CHART))
        self.assertEqual(result["errors"], [])
        self.assertFalse([m for m in result["messages"] if m["severity"] > 1], result["messages"])

    def test_every_object_is_valid_kubernetes(self):
        for label, values in VALUE_SETS.items():
            for obj in render(values).values():
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

    def test_certificate_secret_reaches_the_connection_managers_only(self):
        objects = render(VALUE_SETS["own secret, certificate, load balancer"])
        for deployment in of_kind(objects, "Deployment"):
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            names = {var["name"] for var in container["env"]}
            has_cert = "XMPPD_TLS__CERT_FILE" in names
            self.assertEqual(has_cert, container["name"] == "connection-manager")
        self.assertNotIn(("Secret", "demo-xmppd-urls"), objects)

    def test_missing_urls_are_named(self):
        with self.assertRaisesRegex(Exception, r"storage\.url .* or existingSecret is required"):
            render({})
        with self.assertRaisesRegex(Exception, r"registry\.url .* or existingSecret is required"):
            render({"storage": URLS["storage"]})

    def test_load_test_job_splits_one_population(self):
        objects = render(VALUE_SETS["load test"])
        job = of_kind(objects, "Job")[0]
        self.assertEqual(job["spec"]["completionMode"], "Indexed")
        self.assertEqual(job["spec"]["completions"], 4)
        self.assertEqual(job["spec"]["parallelism"], 4)
        service = of_kind(objects, "Service")[0]["metadata"]["name"]
        for container in containers(job["spec"]["template"]["spec"]):
            args = container["args"]
            self.assertEqual(args[args.index("--target") + 1], f"{service}:5222")
            self.assertIn("--allow-remote", args)
            self.assertEqual(args[args.index("--workers") + 1], "4")
            self.assertEqual(args[args.index("--users") + 1], "1000000")
            self.assertIn("JOB_COMPLETION_INDEX", {var["name"] for var in container["env"]})
        self.assertNotIn("Job", {kind for kind, _ in render(URLS)})
        direct = render({**URLS, "loadtest": {"enabled": True, "tls": "direct"}})
        args = of_kind(direct, "Job")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        self.assertEqual(args[args.index("--target") + 1], f"{service}:5223")


class Pod:
    """One pod of a rendered workload, run as a process on its own loopback address."""

    def __init__(self, name, spec, container, ip, sources, workdir, job_index=None):
        self.name, self.container, self.ip = name, container, ip
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
        field = source["fieldRef"]["fieldPath"]
        return {"status.podIP": self.ip,
                "metadata.annotations['batch.kubernetes.io/job-completion-index']": str(job_index)}[field]

    def local(self, text):
        """What a value means inside this pod: $(VAR) expanded, the pod's own address for the
        wildcard, and its volumes where their mount paths are."""
        text = re.sub(r"\$\((\w+)\)", lambda m: self.env.get(m.group(1), m.group(0)), text)
        text = text.replace("0.0.0.0:", f"{self.ip}:")
        for path, host in self.mounts.items():
            text = text.replace(path, host)
        return text

    def start(self):
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        return self

    def stop(self, grace=30):
        """SIGTERM, as Kubernetes stops a pod; it must exit within the grace period."""
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
        # What the pods' environment and volumes draw from.
        sources = {
            "configmaps": {o["metadata"]["name"]: o["data"] for o in of_kind(objects, "ConfigMap")},
            "secrets": {o["metadata"]["name"]: o["stringData"] for o in of_kind(objects, "Secret")},
        }
        addresses = iter(f"127.0.42.{i}" for i in range(10, 250))
        by_component = {}
        # Replicas first, then the routers that find them, then the edges that attach to those.
        for component in ["session", "router", "connection-manager"]:
            deployment = objects[("Deployment", f"demo-xmppd-{component}")]
            spec = deployment["spec"]["template"]["spec"]
            pod = Pod(component, spec, spec["containers"][0], next(addresses), sources, self.workdir)
            self.pods.append(pod.start())
            pod.wait_ready()
            by_component[component] = pod

        job = of_kind(objects, "Job")[0]
        service = of_kind(objects, "Service")[0]["metadata"]["name"]
        edge = by_component["connection-manager"].ip
        results = {}

        def worker(index, address):
            spec = job["spec"]["template"]["spec"]
            # The init container, then the main one, as a pod runs them; a step that hangs
            # ends the worker with its log, which the assertions below report.
            results[index] = outcome = []
            for step in containers(spec):
                # The Service's name would resolve to its address, which leads to this pod.
                step = {**step, "args": [arg.replace(f"{service}:", f"{edge}:") for arg in step["args"]]}
                pod = Pod(f"loadtest-{index}-{step['name']}", spec, step, address, sources,
                          self.workdir, index)
                try:
                    outcome.append(pod.run())
                except AssertionError as hung:
                    outcome.append((None, str(hung)))
                    return

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


if __name__ == "__main__":
    sys.exit(unittest.main())
