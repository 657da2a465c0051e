"""The deployment files agree with each other, with deploy/README.md and with the code.

Pure Python and fast: no Docker engine, no cluster. docker-compose.yml is read with its `${VAR:-default}`
variables replaced by their defaults; `docker compose config -q` runs too when a Compose CLI is installed.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
from dataclasses import fields
from functools import cache
from pathlib import Path

import pytest
import yaml

from stream_app.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SETTING_VARS = {ENV_PREFIX + f.name.upper() for f in fields(Settings)}
DEFAULTS = Settings()
DEFAULT_TOPICS = {getattr(DEFAULTS, f.name) for f in fields(Settings) if f.name.startswith("topic_")}

# ----------------------------------------------------------------------------- loading

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?]([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value):
    """Compose's interpolation with an empty environment: `${VAR:-default}` -> default, `$$` -> `$`."""
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, str):
        parts = value.split("$$")
        return "$".join(_VARIABLE.sub(lambda m: m.group(2) or "", part) for part in parts)
    return value


@cache
def compose() -> dict:
    return interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def services() -> dict[str, dict]:
    return compose()["services"]


@cache
def readme() -> str:
    return (DEPLOY / "README.md").read_text()


def readme_table(heading: str) -> list[list[str]]:
    """Rows (cells) of the first table after the markdown heading `heading`."""
    lines = readme().split(heading + "\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:]  # without the header


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def published_host_ports(service: dict) -> set[int]:
    ports = set()
    for spec in service.get("ports", []):
        if isinstance(spec, dict):
            ports.add(int(spec["published"]))
        else:
            parts = str(spec).split("/")[0].split(":")
            if len(parts) >= 2:
                ports.add(int(parts[-2]))
    return ports


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def command_text(service: dict, key: str = "command") -> str:
    value = service.get(key, "")
    return value if isinstance(value, str) else " ".join(str(v) for v in value)


# ----------------------------------------------------------------------------- compose


def test_compose_has_the_services_the_readme_names():
    names = {row[0].strip("`") for row in readme_table("### Services")}
    assert names == set(services()), "deploy/README.md's Services table and docker-compose.yml differ"


COMPOSE_OPTIONS_WITH_VALUE = {"--profile", "-f", "--file", "--scale", "--index", "-e", "--env", "-p",
                              "--project-name", "--env-file"}
SUBCOMMANDS_OF_SERVICES = {"up", "logs", "build", "start", "stop", "restart", "pull", "rm", "ps"}


def compose_invocations(line: str):
    """(options {name: [values]}, subcommand, service names) of each `docker compose` call in a shell line."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    for words in [*commands, current]:
        if "docker" not in words or words[words.index("docker") + 1:][:1] != ["compose"]:
            continue
        words = words[words.index("docker") + 2:]
        options, subcommand, names = {}, None, []
        while words:
            word = words.pop(0)
            if word in COMPOSE_OPTIONS_WITH_VALUE:
                options.setdefault(word, []).append(words.pop(0))
            elif word.startswith("-"):
                options.setdefault(word, [])
            elif subcommand is None:
                subcommand = word
            else:
                names.append(word)
                if subcommand in ("run", "exec"):
                    break  # the rest is the command run in the container
        yield options, subcommand, names if subcommand in SUBCOMMANDS_OF_SERVICES | {"run", "exec"} else []


def test_readme_commands_name_existing_services_and_profiles():
    profiles = {p for s in services().values() for p in s.get("profiles", [])}
    blocks = re.findall(r"```bash\n(.*?)```", readme(), flags=re.S)
    inline = re.findall(r"`([^`\n]*docker compose [^`\n]*)`", readme())
    checked = 0
    for line in [line for block in blocks for line in block.splitlines()] + inline:
        for options, _, names in compose_invocations(line):
            for profile in options.get("--profile", []):
                assert profile in profiles, f"{line!r}: no service has profile {profile!r}"
            for scale in options.get("--scale", []):
                names.append(scale.split("=")[0])
            for name in names:
                assert name in services(), f"{line!r} names service {name!r}, not in docker-compose.yml"
                checked += 1
    assert checked >= 8, "expected the README to show docker compose commands with service names"


def test_readme_ports_exist():
    published = {port for s in services().values() for port in published_host_ports(s)}
    rows = readme_table("### Ports")
    for where, port, *_ in rows:
        host, number = ticked(port)[0].rsplit(":", 1)
        if where == "host":
            assert host == "localhost" and int(number) in published, f"{port} is not published"
        else:
            assert host in services(), f"{port}: no service {host}"
            service = services()[host]
            listening = {int(p) for p in service.get("expose", [])}
            listening |= {int(p) for p in re.findall(r"://[\w.-]*:(\d+)", env_of(service).get("KAFKA_LISTENERS", ""))}
            assert int(number) in listening, f"{port}: {host} neither exposes nor listens on {number}"
    assert published <= {int(ticked(port)[0].rsplit(":", 1)[1]) for where, port, *_ in rows if where == "host"}, \
        "a published port is missing from the README's Ports table"


def test_readme_volumes_exist():
    named = {row[0].strip("`") for row in readme_table("### Volumes")}
    assert named == set(compose()["volumes"]), "deploy/README.md's Volumes table and docker-compose.yml differ"
    for name in named:
        assert any(str(v).startswith(f"{name}:") for s in services().values() for v in s.get("volumes", [])), \
            f"volume {name} is declared but no service mounts it"


def test_worker_can_scale():
    worker = services()["worker"]
    assert "container_name" not in worker and "hostname" not in worker
    assert not worker.get("ports"), "a published port collides as soon as there are two replicas"
    assert str(DEFAULTS.web_port) in [str(p) for p in worker.get("expose", [])]
    assert "/app/stores" in worker["volumes"], "each replica needs its own store volume"
    assert "model_artifacts:/app/model_artifacts:ro" in worker["volumes"]
    assert command_text(worker) == "worker"


def test_depends_on_targets_exist_and_can_be_met():
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services().items():
        depends = service.get("depends_on", {})
        for target in depends:
            assert target in services(), f"{name} depends on unknown service {target}"
            condition = depends[target]["condition"] if isinstance(depends, dict) else "service_started"
            assert condition in conditions
            if condition == "service_healthy":
                assert "test" in services()[target].get("healthcheck", {}), f"{target} has no healthcheck"
            if services()[target].get("profiles"):
                assert depends[target].get("required") is False, \
                    f"{name} needs {target}, which only runs with profile {services()[target]['profiles']}"
    worker = services()["worker"]["depends_on"]
    assert worker["topic-init"]["condition"] == "service_completed_successfully"
    assert worker["model-check"]["condition"] == "service_completed_successfully"
    assert services()["topic-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_kafka_is_kraft_with_inside_and_host_listeners():
    kafka = services()["kafka"]
    env = env_of(kafka)
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    assert "://kafka:9092" in advertised and "://localhost:29092" in advertised
    assert "kafka_data:/var/lib/kafka/data" in kafka["volumes"] and env["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"


def test_topic_init_creates_every_topic_with_the_partitions_of_the_settings():
    init = services()["topic-init"]
    env = env_of(init)
    script = command_text(init)
    assert "/opt/kafka/bin/kafka-topics.sh" in script and "--create --if-not-exists" in script
    assert set(env["TOPICS"].split()) == DEFAULT_TOPICS
    assert int(env["PARTITIONS"]) == int(env_of(services()["worker"])["RECSYS_PARTITIONS"]) == DEFAULTS.partitions


def test_recsys_environment_uses_real_settings():
    for name in ("worker", "trainer", "retrainer"):
        env = env_of(services()[name])
        unknown = {k for k in env if k.startswith(ENV_PREFIX)} - SETTING_VARS
        assert not unknown, f"{name}: {unknown} are not settings (stream_app/settings.py)"
    worker = env_of(services()["worker"])
    assert worker["RECSYS_BROKER_URL"] == "kafka://kafka:9092"
    assert {worker[f"RECSYS_TOPIC_{t}"] for t in ("RATINGS", "USERS", "ITEMS", "REQUESTS", "USER_VECTORS",
                                                    "ITEM_VECTORS", "RECOMMENDATIONS", "DEAD_LETTERS")} \
        == DEFAULT_TOPICS


def test_training_jobs_are_profiles_writing_the_shared_volume():
    trainer, retrainer = services()["trainer"], services()["retrainer"]
    assert trainer["profiles"] == ["train"] and retrainer["profiles"] == ["retrain"]
    assert command_text(trainer).startswith("train --data synthetic")
    assert command_text(retrainer).startswith("retrain --every 24h")
    for job in (trainer, retrainer):
        assert "model_artifacts:/app/model_artifacts" in job["volumes"]
        assert job["healthcheck"] == {"disable": True}


# ----------------------------------------------------------------------------- Dockerfile


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, flags=re.M)
    torch_at = text.index('--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"')
    assert "ARG TORCH_VERSION=2.13.0" in text and "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert torch_at < text.index("RUN pip install .")
    users = re.findall(r"^USER (\S+)$", text, flags=re.M)
    uid = re.search(r"^ARG APP_UID=(\d+)$", text, flags=re.M).group(1)
    assert users and users[-1] == "${APP_UID}:${APP_UID}" and int(uid) > 0
    # the same uid as the Kubernetes pods run as (so that fsGroup gives it the volumes)
    pods = [k8s_object("StatefulSet")["spec"]["template"]["spec"],
            k8s_object("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    assert {pod["securityContext"]["runAsUser"] for pod in pods} == {int(uid)}
    assert 'ENTRYPOINT ["recsys"]' in text
    assert re.search(rf"^EXPOSE {DEFAULTS.web_port}$", text, flags=re.M)
    assert re.search(r'^VOLUME \["/app/model_artifacts", "/app/stores"\]$', text, flags=re.M)
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", text, flags=re.M)


def test_dockerignore_keeps_what_the_image_copies():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for needed in (".venv", ".git", "model_artifacts", "data", "stores", "bench/results"):
        assert needed in patterns
    copied = [src for line in re.findall(r"^COPY (?!--from)(.+)$", (ROOT / "Dockerfile").read_text(), flags=re.M)
              for src in line.split()[:-1]]
    assert {"pyproject.toml", "README.md", "stream_app"} <= set(copied)
    for src in [*copied, "stream_app/data/registry.py", "stream_app/__init__.py"]:
        parts = Path(src).parts
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        hits = [p for p in patterns for prefix in prefixes if fnmatch.fnmatch(prefix, p)]
        assert not hits, f".dockerignore pattern(s) {hits} would drop {src}"


# ----------------------------------------------------------------------------- Prometheus


def test_prometheus_scrapes_every_worker_replica():
    prometheus = services()["prometheus"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    # the alert rules are loaded, from where compose mounts them (next to the config file)
    assert config["rule_files"] == ["alerts.yml"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in prometheus["volumes"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["recsys-worker"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    sd = job["dns_sd_configs"][0]
    assert "worker" in sd["names"] and sd["type"] == "A"
    assert sd["port"] == DEFAULTS.web_port == int(env_of(services()["worker"])["RECSYS_WEB_PORT"])


# ----------------------------------------------------------------------------- Grafana


@cache
def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "recsys.json").read_text())


def all_panels() -> list[dict]:
    out = []
    for panel in dashboard()["panels"]:
        out += [panel, *panel.get("panels", [])]
    return out


def defined_series() -> set[str]:
    """Every series name the worker's metrics registry can expose (stream_app/stream/metrics.py)."""
    from stream_app.stream.metrics import StreamMetrics

    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "gauge": ("",), "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
    return {family.name + suffix for family in StreamMetrics().registry.collect()
            for suffix in suffixes.get(family.type, ("",))}


def defined_labels() -> dict[str, set[str]]:
    """Label names of each metric of the worker's registry, by every series name it exposes."""
    from prometheus_client.metrics import MetricWrapperBase

    from stream_app.stream.metrics import StreamMetrics

    labels = {}
    for metric in vars(StreamMetrics()).values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                for series in defined_series():
                    if series == family.name or series.startswith(family.name + "_"):
                        labels[series] = set(metric._labelnames) | ({"le"} if family.type == "histogram" else set())
    return labels


def dashboard_queries() -> list[str]:
    queries = [t["expr"] for p in all_panels() for t in p.get("targets", [])]
    queries += [v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                for v in dashboard()["templating"]["list"] if v["type"] == "query"]
    return queries


def test_grafana_provisioning_matches_compose():
    grafana = services()["grafana"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    mount = next(v.split(":")[1] for v in grafana["volumes"] if v.startswith("./deploy/grafana/dashboards:"))
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/recsys.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == mount
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    datasource = datasource["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["type"] == "prometheus"
    used = {json.dumps(p["datasource"], sort_keys=True) for p in all_panels() if "datasource" in p}
    assert used == {json.dumps({"type": "prometheus", "uid": datasource["uid"]}, sort_keys=True)}


def test_dashboard_queries_only_metrics_the_app_defines():
    defined = defined_series() | {"up"}
    queries = dashboard_queries()
    assert queries
    for query in queries:
        names = set(re.findall(r"\b(recsys_\w+)", query)) | set(re.findall(r"\b([a-zA-Z_:][\w:]*)\{", query))
        assert names <= defined, f"{query!r} uses {names - defined}, not defined in stream_app/stream/metrics.py"
    # labels in `by (...)`, `{label=...}` and legends exist on the metrics of their query
    labels = defined_labels()
    target_labels = {"instance", "job", "dns_name"}  # added by Prometheus (deploy/prometheus/prometheus.yml)
    for panel in all_panels():
        for target in panel.get("targets", []):
            query = target["expr"]
            metrics = set(re.findall(r"\b(recsys_\w+)", query))
            if not metrics:
                continue
            available = set.intersection(*(labels[m] for m in metrics)) | target_labels
            grouped = {label.strip() for clause in re.findall(r"\bby \(([^)]*)\)", query)
                       for label in clause.split(",")}
            matched = set(re.findall(r"[{,]\s*(\w+)\s*=~?", query))
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert grouped | matched | legend <= available, \
                f"{panel['title']!r}: {(grouped | matched | legend) - available} are not labels of {sorted(metrics)}"
    used = {name for q in queries for name in re.findall(r"\b(recsys_\w+|process_\w+|up)\b", q)}
    assert "up" in used, "the dashboard shows nothing of up"
    from stream_app.stream.metrics import StreamMetrics

    for family in StreamMetrics().registry.collect():  # every metric the worker defines has a panel
        assert any(re.fullmatch(rf"{family.name}(_total|_bucket|_sum|_count)?", name) for name in used), \
            f"the dashboard shows nothing of {family.name} (stream_app/stream/metrics.py)"
    assert any('job="recsys-worker"' in q for q in queries), "worker up count must use the scrape job's name"


def test_dashboard_plots_counters_as_rates_and_shows_lag_and_the_process():
    counters = {f"{family.name}_total" for family in _registry_families() if family.type == "counter"}
    for query in dashboard_queries():
        for name in counters & set(re.findall(r"\b(\w+_total)\b", query)):
            # a raw counter only ever climbs (and restarts at 0 with its worker): plot its rate or increase
            assert re.search(rf"\b(rate|increase)\({name}\b", query), f"{query!r} plots the raw counter {name}"
    titles = {p["title"]: p for p in all_panels()}
    inputs = [t["expr"] for t in titles["Input events/s"]["targets"]]
    assert inputs and all('topic!~".+-item-updates"' in q and 'outcome!="rekeyed"' in q for q in inputs), \
        "input events/s must not count the internal item-updates topic (each rating would count twice)"
    from stream_app.worker.topics import internal_topic

    assert re.fullmatch(".+-item-updates", internal_topic(DEFAULTS))  # what the regex above excludes
    assert any("recsys_consumer_lag" in t["expr"] and "by (topic)" in t["expr"]
               for p in all_panels() for t in p.get("targets", [])), "no consumer lag panel"
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"):
        queries = [q for q in dashboard_queries() if name in q]
        assert queries and all('job="recsys-worker"' in q for q in queries), \
            f"{name}: a panel of the workers' processes only (Prometheus has process_* series of its own)"


def _registry_families():
    from stream_app.stream.metrics import StreamMetrics

    return list(StreamMetrics().registry.collect())


def test_dashboard_is_well_formed():
    ids = [p["id"] for p in all_panels()]
    assert len(ids) == len(set(ids))
    for panel in all_panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and panel["title"]
        for target in panel.get("targets", []):
            assert target["expr"].count("(") == target["expr"].count(")")
    assert dashboard()["uid"] and dashboard()["title"]


# ----------------------------------------------------------------------------- Kubernetes


@cache
def k8s_docs() -> dict[str, list[dict]]:
    return {path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
            for path in sorted(K8S.glob("*.yaml"))}


def k8s_object(kind: str) -> dict:
    found = [doc for docs in k8s_docs().values() for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


API_VERSIONS = {"Namespace": "v1", "ConfigMap": "v1", "Service": "v1", "PersistentVolumeClaim": "v1",
                "StatefulSet": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1", "PodDisruptionBudget": "policy/v1",
                "Kustomization": "kustomize.config.k8s.io/v1beta1"}


def test_k8s_files_parse_with_known_kinds_and_kustomization_lists_them():
    for name, docs in k8s_docs().items():
        assert docs, f"{name} is empty"
        for doc in docs:
            assert API_VERSIONS.get(doc["kind"]) == doc["apiVersion"], f"{name}: {doc['kind']} {doc['apiVersion']}"
            assert doc["kind"] == "Kustomization" or doc["metadata"]["name"]
    kustomization = k8s_object("Kustomization")
    assert set(kustomization["resources"]) == set(k8s_docs()) - {"kustomization.yaml"}


def worker_container(statefulset: dict) -> dict:
    return next(c for c in statefulset["spec"]["template"]["spec"]["containers"] if c["name"] == "worker")


def test_k8s_worker_statefulset_keeps_a_store_per_replica():
    sts, config = k8s_object("StatefulSet"), k8s_object("ConfigMap")["data"]
    claims = {t["metadata"]["name"]: t for t in sts["spec"]["volumeClaimTemplates"]}
    assert claims, "the StatefulSet needs a volumeClaimTemplate for the RocksDB store"
    container = worker_container(sts)
    assert container["args"] == ["worker"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    store = next(m for m in mounts.values() if m["name"] in claims)
    assert store["mountPath"] == config["RECSYS_STORE_DIR"]
    assert mounts["model-artifacts"]["mountPath"] == config["RECSYS_ARTIFACTS_DIR"]
    assert mounts["model-artifacts"]["readOnly"] is True
    assert {"configMapRef": {"name": config and k8s_object("ConfigMap")["metadata"]["name"]}} in container["envFrom"]
    # headless Service for the StatefulSet, selecting its pods
    service = k8s_object("Service")
    assert sts["spec"]["serviceName"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_k8s_scrape_annotations_point_at_the_metrics_port():
    sts, config = k8s_object("StatefulSet"), k8s_object("ConfigMap")["data"]
    port = int(config["RECSYS_WEB_PORT"])
    assert port == DEFAULTS.web_port
    for notes in (sts["spec"]["template"]["metadata"]["annotations"], k8s_object("Service")["metadata"]["annotations"]):
        assert notes["prometheus.io/scrape"] == "true"
        assert int(notes["prometheus.io/port"]) == port and notes["prometheus.io/path"] == "/metrics"
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in worker_container(sts)["ports"]


def test_k8s_config_models_and_retraining():
    config = k8s_object("ConfigMap")["data"]
    unknown = {k for k in config if k.startswith(ENV_PREFIX)} - SETTING_VARS
    assert not unknown, f"{unknown} are not settings"
    assert {config[k] for k in config if k.startswith("RECSYS_TOPIC_")} == DEFAULT_TOPICS
    pvc = k8s_object("PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    cron = k8s_object("CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    train = pod["containers"][0]
    assert train["args"][:2] == ["retrain", "--once"]
    claim = {v["name"]: v for v in pod["volumes"]}["model-artifacts"]["persistentVolumeClaim"]["claimName"]
    assert claim == pvc["metadata"]["name"]
    assert {"name": "model-artifacts", "mountPath": config["RECSYS_ARTIFACTS_DIR"]} in train["volumeMounts"]
    images = {i["name"] for i in k8s_object("Kustomization")["images"]}
    for container in [*pod["containers"], worker_container(k8s_object("StatefulSet"))]:
        assert container["image"].split(":")[0] in images


def test_k8s_worker_probes_use_health_endpoints():
    container = worker_container(k8s_object("StatefulSet"))
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {kind: probe["path"] for kind, probe in probes.items()} == \
        {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/ready"}
    assert {probe["port"] for probe in probes.values()} == {"metrics"}
    from stream_app.stream.web import PATHS

    assert {"/healthz", "/ready", "/metrics"} == set(PATHS)


def test_k8s_pod_disruption_budget_covers_the_workers():
    pdb, sts = k8s_object("PodDisruptionBudget"), k8s_object("StatefulSet")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]


def pod_specs() -> dict[str, dict]:
    out = {}
    for docs in k8s_docs().values():
        for doc in docs:
            spec = doc.get("spec", {})
            if doc["kind"] == "CronJob":
                spec = spec["jobTemplate"]["spec"]
            if "template" in spec:
                out[doc["metadata"]["name"]] = spec["template"]["spec"]
    return out


def test_k8s_containers_are_locked_down():
    pods = pod_specs()
    assert set(pods) == {"recsys-worker", "recsys-topics", "recsys-retrain"}
    for name, pod in pods.items():
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0, name
        mounts_of_pod = {v["name"] for v in pod.get("volumes", [])}
        if name == "recsys-worker":
            mounts_of_pod |= {t["metadata"]["name"] for t in k8s_object("StatefulSet")["spec"]["volumeClaimTemplates"]}
        for container in pod.get("initContainers", []) + pod["containers"]:
            where = f"{name}/{container['name']}"
            context = container.get("securityContext", {})
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not context.get("capabilities", {}).get("add") and not context.get("privileged"), where
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in mounts_of_pod, f"{where}: no volume {mount['name']}"
    # a read-only root filesystem: everything the worker and the trainer write is a volume
    config = k8s_object("ConfigMap")["data"]
    worker = {m["mountPath"]: m for m in worker_container(k8s_object("StatefulSet"))["volumeMounts"]}
    assert {config["RECSYS_STORE_DIR"], "/tmp"} <= set(worker) and not worker["/tmp"].get("readOnly")
    assert not worker[config["RECSYS_STORE_DIR"]].get("readOnly")
    train = pods["recsys-retrain"]["containers"][0]
    written = {m["mountPath"] for m in train["volumeMounts"] if not m.get("readOnly")}
    assert {config["RECSYS_ARTIFACTS_DIR"], config["RECSYS_DATA_CACHE"], "/tmp"} <= written
    topics = pods["recsys-topics"]["containers"][0]
    assert {"name": "LOG_DIR", "value": "/tmp/kafka-logs"} in topics["env"]
    assert "/tmp" in {m["mountPath"] for m in topics["volumeMounts"]}
    # the image's Python writes nothing else on its root filesystem
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "PYTHONDONTWRITEBYTECODE=1" in dockerfile and "MPLCONFIGDIR=/tmp/matplotlib" in dockerfile


# ----------------------------------------------------------------------------- alert rules


@cache
def alert_rules() -> dict[str, dict]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_alert_rules_cover_the_failure_modes_and_use_defined_metrics():
    rules = alert_rules()
    assert rules["RecsysWorkerDown"]["expr"].strip() == 'up{job="recsys-worker"} == 0'
    assert "recsys_consumer_lag" in rules["RecsysConsumerLagHigh"]["expr"]
    assert "deriv(recsys_consumer_lag" in rules["RecsysConsumerLagGrowing"]["expr"]
    assert "recsys_dead_letters_total" in rules["RecsysDeadLetterRate"]["expr"]
    assert 'outcome="refused"' in rules["RecsysModelRefused"]["expr"]
    assert "recsys_ready" in rules["RecsysWorkerNotReady"]["expr"]
    defined = defined_series() | {"up"}
    for name, rule in rules.items():
        used = set(re.findall(r"\b(recsys_\w+|process_\w+)\b", rule["expr"]))
        assert used <= defined, f"{name} uses {used - defined}"
        assert rule["labels"]["severity"] in ("critical", "warning") and rule["annotations"]["summary"], name
    operations = (ROOT / "docs" / "operations.md").read_text()
    for name in rules:
        assert f"`{name}`" in operations, f"docs/operations.md does not say what to do about {name}"


def test_operations_doc_lists_every_metric():
    operations = (ROOT / "docs" / "operations.md").read_text()
    for family in _registry_families():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in operations, f"docs/operations.md does not describe {name}"


# ----------------------------------------------------------------------------- the real Compose CLI


def compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.parametrize("profiles", [[], ["train", "retrain"]], ids=["default", "all-profiles"])
def test_docker_compose_config_validates(profiles):
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Compose CLI: neither `docker compose` (the v2 plugin) nor `docker-compose` is installed; "
                    "see deploy/README.md, 'Checking the files without a Docker engine'")
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    result = subprocess.run([*cli, "-f", str(ROOT / "docker-compose.yml"), *flags, "config", "-q"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    # stderr must be empty too: some wrappers of the Compose binary exit 0 whatever happened
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
