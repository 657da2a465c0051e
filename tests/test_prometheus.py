"""A real Prometheus scrapes a real worker on the embedded broker: every PromQL expression of the Grafana dashboard
returns data, every alert rule of deploy/prometheus/alerts.yml evaluates, the worker-down alert goes pending once
the worker is killed; promtool validates the rules and the config and runs the rules' unit tests.

Needs the `prometheus` and `promtool` binaries (Debian package `prometheus`; .ci/run installs it): skipped where
they are absent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from stream_harness import Worker, known_user, rating, train_tiny
from test_deploy import alert_rules, dashboard_queries

from stream_app.broker import free_port

ROOT = Path(__file__).parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
JOB = "recsys-worker"  # the scrape job the dashboard and the rules select
RATE_INTERVAL = "10s"  # Grafana's $__rate_interval for a 1 s scrape interval (at least 4 scrapes)

pytestmark = pytest.mark.integration


def binary(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(path).is_file():
        pytest.skip(f"`{name}` is not installed (Debian/Ubuntu: apt-get install prometheus; .ci/run installs it)")
    return path


def wait_until(check, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")
        time.sleep(0.25)


class Prometheus:
    """`prometheus` on a free loopback port scraping one worker every second, with the rules of alerts.yml."""

    def __init__(self, root: Path, target_port: int):
        self.port = free_port()
        self.log = root / "prometheus.log"
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                  "rule_files": [str(RULES)],
                  "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}]}
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process = subprocess.Popen(
            [binary("prometheus"), f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        wait_until(self.ready, 30, "Prometheus to start", self.log)

    def ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text(errors="replace")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def api(self, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read())
        assert body["status"] == "success", f"{params}: {body.get('errorType')}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> list:
        return self.api("query", query=expr)["result"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture(scope="module")
def worker(kafka_broker, tmp_path_factory):
    binary("prometheus")  # skip before training and starting anything
    artifact = tmp_path_factory.mktemp("model") / "tiny"
    rec = train_tiny(artifact)
    w = Worker(kafka_broker, artifact, tmp_path_factory.mktemp("worker"))
    w.env["RECSYS_LAG_INTERVAL"] = "1"
    w.start()
    try:
        user, _ = known_user((artifact, rec))
        for k, item in enumerate(rec.ids["item"][:3]):
            w.send("ratings", rating(f"prom-{k}", user, item), key=user)
        w.send("ratings", b"{not json", key=user)  # a dead letter
        w.wait_for("item_vectors", lambda k, v: True)
        w.wait_for("recommendations", lambda k, v: k == user)
        w.wait_for("dead_letters", lambda k, v: True)
        yield w
    finally:
        w.close()


@pytest.fixture(scope="module")
def prometheus(worker, tmp_path_factory):
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), worker.port)
    try:
        # enough scrapes for rates over RATE_INTERVAL, and the worker's first lag samples
        wait_until(lambda: server.query(f'count_over_time(up{{job="{JOB}"}}[1m]) >= 5')
                   and server.query('recsys_consumer_lag{topic=~".+-item-updates"}'), 40, "scrapes", server.log)
        yield server
    finally:
        server.stop()


def promql(query: str) -> str:
    """A dashboard query as Prometheus runs it: Grafana's variables filled in, label_values() as its series."""
    values = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
    query = values.group(1) if values else query
    return query.replace("$__rate_interval", RATE_INTERVAL).replace('"$instance"', '".*"')


def test_every_dashboard_query_returns_data(prometheus):
    queries = dashboard_queries()
    assert len(queries) > 30
    empty = [query for query in queries if not prometheus.query(promql(query))]
    assert not empty, "dashboard queries without data from a real worker:\n" + "\n".join(empty)


def test_the_worker_exports_what_the_issue_asks_for(prometheus, worker):
    up = prometheus.query(f'up{{job="{JOB}"}}')
    assert [float(s["value"][1]) for s in up] == [1.0]
    lag = prometheus.query(f'recsys_consumer_lag{{topic="{worker.topics["ratings"]}"}}')
    assert sorted(int(s["metric"]["partition"]) for s in lag) == [0, 1, 2, 3]
    assert all(float(s["value"][1]) >= 0 for s in lag)
    dead = prometheus.query('sum by (reason) (recsys_dead_letters_total{reason="unparseable_json"})')
    assert dead and float(dead[0]["value"][1]) >= 1
    assert float(prometheus.query("max(process_resident_memory_bytes)")[0]["value"][1]) > 10e6
    assert float(prometheus.query("recsys_ready")[0]["value"][1]) == 1.0
    # the input rate counts each rating once: not again as its internal item-updates forward
    counted = prometheus.query('sum(recsys_events_total{topic!~".+-item-updates", outcome!="rekeyed"})')
    every = prometheus.query("sum(recsys_events_total)")
    assert float(counted[0]["value"][1]) < float(every[0]["value"][1])


def test_alert_rules_load_and_evaluate(prometheus):
    for rule in alert_rules().values():
        prometheus.query(rule["expr"])  # valid PromQL on real series (the API answers success)
    expected = set(alert_rules())

    def evaluated():
        rules = {r["name"]: r for g in prometheus.api("rules")["groups"] for r in g["rules"]}
        return rules if set(rules) == expected and all(r.get("lastEvaluation", "0001").startswith("20")
                                                       for r in rules.values()) else None

    rules = wait_until(evaluated, 20, "the rules to be evaluated", prometheus.log)
    assert {name: r["health"] for name, r in rules.items()} == {name: "ok" for name in expected}
    assert all(r["state"] == "inactive" for r in rules.values()), "a healthy worker alerts"


def test_worker_down_alert_goes_pending_when_the_worker_dies(prometheus, worker):
    worker.kill()

    def pending():
        return [a for a in prometheus.api("alerts")["alerts"] if a["labels"]["alertname"] == "RecsysWorkerDown"]

    alerts = wait_until(pending, 20, "RecsysWorkerDown", prometheus.log)
    assert alerts[0]["state"] in ("pending", "firing") and alerts[0]["labels"]["job"] == JOB
    assert prometheus.query(alert_rules()["RecsysWorkerDown"]["expr"])


# ----------------------------------------------------------------------------- promtool, no worker needed


@pytest.mark.parametrize("args", [["check", "rules", "deploy/prometheus/alerts.yml"],
                                  ["check", "config", "deploy/prometheus/prometheus.yml"],
                                  ["test", "rules", "deploy/prometheus/alerts_test.yml"]],
                         ids=["check-rules", "check-config", "test-rules"])
def test_promtool(args):
    result = subprocess.run([binary("promtool"), *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
