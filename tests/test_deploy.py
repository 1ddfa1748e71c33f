"""Deployment files (deploy/, scripts/up.sh, scripts/down.sh).

Static checks: every YAML file parses; docker-compose, the Kubernetes manifests and the Helm
chart (rendered by a small Go-template subset below, or by `helm` when it is installed) run
real CLI commands, consume every queue, keep run drivers apart from node workers, run exactly
one beat and hold no secret value.

Integration (`distributed`): `scripts/up.sh` on a fresh database and Redis db, then
`/health/ready` and Flower answer, a second `up.sh` starts nothing, `scripts/down.sh` leaves
no process behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import yaml  # PyYAML: a dev dependency

from agentflow.cli import build_parser
from agentflow.workers.app import ALL_QUEUES, CONTROL_QUEUE, RUN_QUEUE

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CHART = DEPLOY / "helm" / "agentflow"
COMPOSE = DEPLOY / "docker-compose.yml"
EXPECTED_QUEUES = set(ALL_QUEUES) | {CONTROL_QUEUE}
NODE_QUEUES = set(ALL_QUEUES) - {RUN_QUEUE}
CELERY_APP = "agentflow.workers.app:celery_app"
PARTS = ["api", "worker-runs", "worker-llm", "worker-image", "worker-io", "beat", "flower"]


def yaml_files() -> list[Path]:
    """Every YAML file under deploy/ except the Helm templates (Go templates, not YAML)."""
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))
    return [p for p in files if CHART / "templates" not in p.parents]


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s_docs(include_extras: bool = False) -> list[dict]:
    paths = sorted(K8S.glob("*.yaml")) + (sorted((K8S / "extras").glob("*.yaml")) if include_extras else [])
    return [d for p in paths for d in load_docs(p)]


# ---------------------------------------------------------------- shared checks


def parse_agentflow(args: list[str]):
    """The arguments as `agentflow` parses them; fails the test when the CLI rejects them."""
    try:
        return build_parser().parse_args([str(a) for a in args])
    except SystemExit as exc:  # argparse exits on an unknown command or option
        pytest.fail(f"`agentflow {' '.join(map(str, args))}` is not a valid command line ({exc})")


def check_flower(command: list[str]) -> None:
    assert command[0] == "celery", command
    assert command[1:3] == ["--app", CELERY_APP] and "flower" in command, command
    module, attr = CELERY_APP.split(":")
    assert getattr(__import__(module, fromlist=[attr]), attr) is not None


def check_workers(workers: dict[str, list[str]], where: str) -> None:
    """`workers` maps a worker's name to its `agentflow worker` arguments."""
    consumed: set[str] = set()
    for name, args in workers.items():
        parsed = parse_agentflow(args)
        assert parsed.command == "worker"
        queues = set(parsed.queues.split(","))
        assert queues <= EXPECTED_QUEUES, f"{where}: {name} consumes unknown queues {queues - EXPECTED_QUEUES}"
        # Not a correctness rule (no task waits on another), but the shipped layouts keep
        # drivers apart from node backlogs: a change here should be deliberate.
        assert not (RUN_QUEUE in queues and queues & NODE_QUEUES), \
            f"{where}: {name} mixes run drivers with node queues {queues & NODE_QUEUES}"
        assert parsed.hostname and parsed.hostname.endswith("@%h"), f"{where}: {name} needs --hostname NAME@%h"
        consumed |= queues
    assert consumed >= EXPECTED_QUEUES, f"{where}: no worker consumes {EXPECTED_QUEUES - consumed}"
    nodenames = [parse_agentflow(a).hostname for a in workers.values()]
    assert len(set(nodenames)) == len(nodenames), f"{where}: two workers share a Celery node name"


SECRET_NAME = re.compile(r"(PASSWORD|SECRET|API_KEY|TOKEN)$")
URL_PASSWORD = re.compile(r"[a-z+]+://[^:/@\s\"']+:([^@\s\"']*)@")


def placeholder(value: str) -> bool:
    """An interpolation or an obvious placeholder, not a value."""
    return value in ("", "...", "***") or value.startswith(("${", "$(", "<"))


def test_no_secret_values_anywhere():
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        text = path.read_text(errors="replace")
        assert not re.search(r"sk-[A-Za-z0-9_-]{8,}", text), f"{path}: looks like an API key"
        for match in URL_PASSWORD.finditer(text):
            assert placeholder(match.group(1)), f"{path}: a password inside a URL: {match.group(0)}"
        for line in text.splitlines():  # KEY=value (env files, Dockerfile ENV) lines
            m = re.match(r"\s*(?:export\s+)?([A-Z_]+)=(\S*)", line)
            if m and SECRET_NAME.search(m.group(1)):
                assert placeholder(m.group(2)), f"{path}: {line.strip()}"


def test_every_yaml_file_parses():
    files = yaml_files()
    assert {COMPOSE, CHART / "Chart.yaml", CHART / "values.yaml"} <= set(files)
    assert len([p for p in files if K8S in p.parents]) >= 10
    for path in files:
        assert load_docs(path), f"{path} is empty"


# ---------------------------------------------------------------- docker compose


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


AGENTFLOW_SERVICES = {"api", "worker-runs", "worker-llm", "worker-image", "worker-io", "beat", "flower", "migrate"}


def test_compose_services_and_order(compose):
    services = compose["services"]
    assert set(services) == AGENTFLOW_SERVICES | {"postgres", "redis"}
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"].get("restart") == "no"
    assert parse_agentflow(services["migrate"]["command"]).command == "migrate"
    for name in AGENTFLOW_SERVICES - {"migrate"}:
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["redis"]["condition"] == "service_healthy", name
    for name in AGENTFLOW_SERVICES - {"migrate", "beat"} | {"postgres", "redis"}:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    build = services["api"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"


def test_compose_commands_are_real_cli_commands(compose):
    services = compose["services"]
    assert parse_agentflow(services["api"]["command"]).command == "serve"
    assert parse_agentflow(services["beat"]["command"]).command == "beat"
    check_flower(services["flower"]["entrypoint"] + services["flower"]["command"])
    workers = {}
    for name, svc in services.items():
        if name.startswith("worker-"):
            args = [re.sub(r"\$\{[A-Z_]+:-(\d+)\}", r"\1", str(a)) for a in svc["command"]]
            workers[name] = args
    check_workers(workers, "docker-compose.yml")
    assert "deploy" not in services["beat"] or services["beat"]["deploy"].get("replicas", 1) == 1


def test_compose_secrets_are_names_only(compose):
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert value is None or str(value).startswith("${"), f"{name}: {key} has a value"
    env = compose["services"]["api"]["environment"]
    assert "OPENAI_API_KEY" in env and env["OPENAI_API_KEY"] is None  # passed through, never set here
    assert "${POSTGRES_PASSWORD" in env["DATABASE_URL"]


def test_compose_matches_up_sh(compose):
    """docker compose runs the same worker groups as `make up` (scripts/up.sh)."""
    up = (ROOT / "scripts" / "up.sh").read_text()
    up_queues = set(re.findall(r"worker --queues (\S+)", up))
    compose_queues = {svc["command"][svc["command"].index("--queues") + 1]
                      for name, svc in compose["services"].items() if name.startswith("worker-")}
    assert up_queues == compose_queues
    for part in PARTS:
        assert re.search(rf"^\s*{re.escape(part)}\)\s+exec setsid", up, re.M), f"up.sh does not start {part}"


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert [f[0] for f in froms] == ["node:${NODE_VERSION}-slim", "python:${PYTHON_VERSION}-slim"]
    assert re.search(r"^ARG PYTHON_VERSION=3\.11$", text, re.M) and re.search(r"^ARG NODE_VERSION=20$", text, re.M)
    assert "npm run build" in text and "COPY --from=studio /src/studio/out" in text
    assert re.search(r'^ENTRYPOINT \["agentflow"\]$', text, re.M)
    assert re.search(r"^USER 10001$", text, re.M)
    assert (DEPLOY / "Dockerfile.dockerignore").exists()


# ---------------------------------------------------------------- Kubernetes manifests


def containers_of(doc: dict) -> list[dict]:
    if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
        return doc["spec"]["template"]["spec"]["containers"]
    return []


def check_manifests(docs: list[dict], where: str, names: dict[str, str]) -> None:
    """Checks shared by deploy/k8s and the rendered chart; `names` maps a part to its name."""
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), doc
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    deployments = by_kind["Deployment"]
    assert names["api"] in by_kind["Service"] and names["flower"] in by_kind["Service"]
    assert {names["postgres"], names["redis"]} <= set(by_kind["StatefulSet"])
    for part in ("postgres", "redis"):
        sts = by_kind["StatefulSet"][names[part]]
        assert sts["spec"]["volumeClaimTemplates"], f"{where}: {part} has no PVC"
        assert sts["spec"]["serviceName"] in by_kind["Service"]
    assert len(by_kind["Job"]) == 1

    # every pod template carries its selector's labels; every Service selects some pods
    pod_labels = []
    for kind in ("Deployment", "StatefulSet"):
        for name, doc in by_kind[kind].items():
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items(), f"{where}: {name}"
            pod_labels.append(labels)
    for name, svc in by_kind["Service"].items():
        assert any(svc["spec"]["selector"].items() <= labels.items() for labels in pod_labels), \
            f"{where}: Service {name} selects no pods"

    # commands: the real CLI; every AgentFlow container runs the same image
    images, workers = set(), {}
    for name, doc in {**deployments, **by_kind["Job"]}.items():
        for c in containers_of(doc):
            assert c["resources"]["requests"] and c["resources"]["limits"], f"{where}: {name} resources"
            images.add(c["image"])
            if c.get("command") == ["celery"]:
                check_flower(c["command"] + c["args"])
                continue
            parsed = parse_agentflow(c["args"])
            if parsed.command == "worker":
                workers[name] = c["args"]
                probe = " ".join(c["livenessProbe"]["exec"]["command"])
                assert f"--destination {parsed.hostname.split('@')[0]}@$HOSTNAME" in probe
    assert len(images) == 1, f"{where}: AgentFlow containers use different images {images}"
    check_workers(workers, where)
    job = next(iter(by_kind["Job"].values()))
    assert parse_agentflow(containers_of(job)[0]["args"]).command == "migrate"

    # the API: probes, HLD 7.3 resources and replica range
    api = deployments[names["api"]]["spec"]
    c = api["template"]["spec"]["containers"][0]
    assert parse_agentflow(c["args"]).command == "serve"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"},
                              "limits": {"cpu": "2", "memory": "2Gi"}}

    # exactly one beat
    beat = deployments[names["beat"]]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    assert parse_agentflow(beat["template"]["spec"]["containers"][0]["args"]).command == "beat"

    # autoscalers: API 3-10, node workers on CPU, never beat nor the run drivers
    hpas = by_kind.get("HorizontalPodAutoscaler", {})
    targets = {h["spec"]["scaleTargetRef"]["name"]: h["spec"] for h in hpas.values()}
    assert set(targets) <= set(deployments), f"{where}: an HPA targets a missing Deployment"
    assert (targets[names["api"]]["minReplicas"], targets[names["api"]]["maxReplicas"]) == (3, 10)
    assert names["beat"] not in targets and names["worker-runs"] not in targets
    for part in ("worker-llm", "worker-image", "worker-io"):
        assert targets[names[part]]["metrics"][0]["resource"]["name"] == "cpu"


K8S_NAMES = {p: p for p in PARTS + ["postgres", "redis"]}


def test_k8s_manifests():
    docs = k8s_docs()
    check_manifests(docs, "deploy/k8s", K8S_NAMES)
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ConfigMap"} <= kinds and "Secret" not in kinds  # the template is in extras/
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "agentflow", doc["metadata"]["name"]
        for c in containers_of(doc):  # secrets come from the Secret, never as literal env values
            for env in c.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    assert "value" not in env and env["valueFrom"]["secretKeyRef"], env


def test_k8s_disruption_budgets_select_the_api_and_every_worker_group():
    docs = k8s_docs()
    selectors = {d["metadata"]["name"]: d["spec"]["selector"] for d in docs if d["kind"] == "Deployment"}
    pdbs = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert set(pdbs) == {n for n in selectors if n == "api" or n.startswith("worker-")}
    for name, spec in pdbs.items():
        assert spec["selector"] == selectors[name] and spec["maxUnavailable"] == 1, name


def test_k8s_extras_secret_template_and_keda():
    (secret,) = load_docs(K8S / "extras" / "secret.template.yaml")
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "agentflow-secrets"
    assert {"DATABASE_URL", "POSTGRES_PASSWORD", "OPENAI_API_KEY"} <= set(secret["stringData"])
    assert all(v == "" for v in secret["stringData"].values()), "the template holds keys only"
    (scaled,) = load_docs(K8S / "extras" / "keda-llm-scaledobject.yaml")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["kind"] == "ScaledObject"
    deployments = {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == "Deployment"}
    target = deployments[scaled["spec"]["scaleTargetRef"]["name"]]
    queues = parse_agentflow(target["spec"]["template"]["spec"]["containers"][0]["args"]).queues.split(",")
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] in queues


# ---------------------------------------------------------------- Helm chart
# `helm` is not installed on every machine: a small renderer for the Go-template subset the
# chart uses (define/include, if/else, range, with, variables, and the functions below).
# It is strict where Helm is lax: a missing value is an error, which catches typos.

_ACTION = re.compile(r"\{\{(- )?(.*?)( -)?\}\}", re.S)


class _Tpl:
    def __init__(self, sources: dict[str, str]):
        self.defines: dict[str, list] = {}
        self.trees = {name: self._parse(src) for name, src in sources.items()}

    # -- parsing
    def _parse(self, src: str) -> list:
        tokens, pos, trim_next = [], 0, False
        for m in _ACTION.finditer(src):
            text = src[pos:m.start()]
            if trim_next:
                text = text.lstrip()
            if m.group(1):
                text = text.rstrip()
            tokens.append(("text", text))
            body = m.group(2).strip()
            if not (body.startswith("/*") and body.endswith("*/")):
                tokens.append(("action", body))
            trim_next, pos = bool(m.group(3)), m.end()
        tail = src[pos:]
        tokens.append(("text", tail.lstrip() if trim_next else tail))
        tree, rest = self._block(tokens, 0)
        assert rest == len(tokens), "unbalanced {{ end }}"
        return tree

    def _block(self, tokens, i, stop=("end",)):
        nodes = []
        while i < len(tokens):
            kind, body = tokens[i]
            word = body.split(" ", 1)[0] if kind == "action" else None
            if word in stop or (word == "else" and "else" in stop):
                return nodes, i
            i += 1
            if kind == "text":
                nodes.append(("text", body))
            elif word in ("if", "with", "range"):
                branches, otherwise, head = [], [], body
                while True:
                    inner, i = self._block(tokens, i, stop=("end", "else"))
                    branches.append((head, inner))
                    closing = tokens[i][1]
                    i += 1
                    if closing == "end":
                        break
                    if closing.startswith("else if "):
                        head = "if " + closing[len("else if "):]
                        continue
                    otherwise, i = self._block(tokens, i)
                    i += 1
                    break
                nodes.append((word, branches, otherwise))
            elif word == "define":
                inner, i = self._block(tokens, i)
                i += 1
                self.defines[json.loads(body.split(" ", 1)[1])] = inner
            else:
                nodes.append(("action", body))
        return nodes, i

    # -- evaluation
    def render(self, name: str, dot) -> str:
        return self._run(self.trees[name], dot, {"$": dot})

    def _run(self, nodes, dot, env) -> str:
        out = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "action":
                m = re.match(r"(\$\w+)\s*:?=\s*(.*)", node[1], re.S)
                if m:
                    env[m.group(1)] = self._pipe(m.group(2), dot, env)
                else:
                    out.append(self._str(self._pipe(node[1], dot, env)))
            else:
                out.append(self._control(node, dot, env))
        return "".join(out)

    def _control(self, node, dot, env) -> str:
        word, branches, otherwise = node
        for head, inner in branches:
            expr = head.split(" ", 1)[1]
            if word == "range":
                m = re.match(r"(\$\w+)\s*,\s*(\$\w+)\s*:=\s*(.*)", expr)
                value = self._pipe(m.group(3) if m else expr, dot, env)
                items = sorted(value.items()) if isinstance(value, dict) else list(enumerate(value or []))
                if not items:
                    break
                parts = []
                for k, v in items:
                    scope = dict(env)
                    if m:
                        scope[m.group(1)], scope[m.group(2)] = k, v
                    parts.append(self._run(inner, v, scope))
                return "".join(parts)
            value = self._pipe(expr, dot, env)
            if value:
                return self._run(inner, value if word == "with" else dot, dict(env))
        return self._run(otherwise, dot, dict(env))

    def _pipe(self, text: str, dot, env):
        value, first = None, True
        for command in self._split(text, "|"):
            words = self._split(command.strip(), " ")
            args = [self._operand(w, dot, env) for w in words[1:]] + ([] if first else [value])
            head = words[0]
            if re.fullmatch(r"[a-zA-Z]\w*", head) and head not in ("true", "false"):
                value = self._call(head, args, dot)
            else:
                assert not args, f"cannot call {head}"
                value = self._operand(head, dot, env)
            first = False
        return value

    @staticmethod
    def _split(text: str, sep: str) -> list[str]:
        parts, depth, quote, cur = [], 0, False, ""
        for ch in text:
            if ch == '"':
                quote = not quote
            elif not quote and ch == "(":
                depth += 1
            elif not quote and ch == ")":
                depth -= 1
            if ch == sep and not quote and depth == 0:
                if cur.strip():
                    parts.append(cur.strip())
                cur = ""
            else:
                cur += ch
        if cur.strip():
            parts.append(cur.strip())
        return parts

    def _operand(self, word: str, dot, env):
        if word.startswith("("):
            return self._pipe(word[1:-1], dot, env)
        if word.startswith('"'):
            return json.loads(word)
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        if word in ("true", "false"):
            return word == "true"
        if word.startswith("$"):
            name, _, path = word.partition(".")
            value = env[name]
        elif word.startswith("."):
            value, path = dot, word[1:]
        else:
            raise AssertionError(f"unknown operand {word}")
        for key in filter(None, path.split(".")):
            assert isinstance(value, dict) and key in value, f"no value at {word}"
            value = value[key]
        return value

    def _call(self, fn: str, args: list, dot):
        if fn == "include":
            return self._run(self.defines[args[0]], args[1], {"$": args[1]})
        if fn == "printf":
            return re.sub(r"%v", "%s", args[0]) % tuple(args[1:])
        if fn == "toYaml":
            return yaml.safe_dump(args[0], default_flow_style=False, sort_keys=True).rstrip("\n")
        if fn in ("nindent", "indent"):
            pad = " " * args[0]
            body = "\n".join(pad + line for line in self._str(args[1]).split("\n"))
            return "\n" + body if fn == "nindent" else body
        if fn == "required":
            assert args[1] not in (None, ""), args[0]
            return args[1]
        simple = {"quote": lambda v: json.dumps(self._str(v)), "not": lambda v: not v,
                  "trunc": lambda n, v: v[:n], "trimSuffix": lambda s, v: v[: -len(s)] if v.endswith(s) else v,
                  "dict": lambda *kv: dict(zip(kv[::2], kv[1::2])),
                  "default": lambda d, v=None: v if v else d, "splitList": lambda sep, v: v.split(sep)}
        return simple[fn](*args)

    @staticmethod
    def _str(value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)


def render_chart(overrides: dict | None = None, release: str = "af") -> list[dict]:
    helm = shutil.which("helm")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path, value in (overrides or {}).items():
        node = values
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    if helm:  # the real thing, where it exists
        args = [helm, "template", release, str(CHART)]
        for path, value in (overrides or {}).items():
            args += ["--set-json", f"{path}={json.dumps(value)}"]
        text = subprocess.run(args, check=True, capture_output=True, text=True).stdout
        return [d for d in yaml.safe_load_all(text) if d]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    root = {"Values": values, "Release": {"Name": release, "Namespace": "default", "Revision": 1,
                                          "Service": "Helm"},
            "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]}}
    templates = {p.name: p.read_text() for p in sorted((CHART / "templates").iterdir())
                 if p.suffix in (".yaml", ".tpl", ".txt")}
    tpl = _Tpl(templates)
    docs = []
    for name in templates:
        text = tpl.render(name, root)
        if name.endswith(".yaml"):
            try:
                docs += [d for d in yaml.safe_load_all(text) if d]
            except yaml.YAMLError as exc:
                pytest.fail(f"{name} renders to invalid YAML: {exc}\n{text}")
    return docs


def chart_names(release: str = "af") -> dict[str, str]:
    return {p: f"{release}-{p}" for p in PARTS + ["postgres", "redis"]}


def test_helm_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "agentflow" and chart["version"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["workers"]) == {"runs", "llm", "image", "io"}
    assert "replicas" not in values["beat"], "beat is not scalable"
    text = "\n".join(p.read_text() for p in (CHART / "templates").iterdir())
    assert text.count("{{") == text.count("}}")
    if shutil.which("helm"):
        subprocess.run(["helm", "lint", str(CHART)], check=True, capture_output=True)


def test_helm_chart_renders_the_same_objects():
    docs = render_chart()
    check_manifests(docs, "helm", chart_names())
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config["data"]["REDIS_URL"] == "redis://af-redis:6379/0"
    assert config["data"]["AGENTFLOW_LOG_LEVEL"] == "WARNING"
    assert not [d for d in docs if d["kind"] == "Secret"], "the chart holds no secret values"


def test_helm_chart_values_switch_parts():
    docs = render_chart({"redis.enabled": False, "redis.url": "redis://elsewhere:6379/3",
                         "postgres.enabled": False, "flower.enabled": False,
                         "api.autoscaling.enabled": False, "workers.llm.autoscaling.enabled": False,
                         "workers.llm.replicas": 5, "image.tag": "1.2.3"})
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("StatefulSet", "af-redis") not in kinds and ("StatefulSet", "af-postgres") not in kinds
    assert ("Deployment", "af-flower") not in kinds
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert deployments["af-api"]["spec"]["replicas"] == 3
    assert deployments["af-worker-llm"]["spec"]["replicas"] == 5
    assert "replicas" not in deployments["af-worker-io"]["spec"]  # the HPA owns it
    hpas = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert hpas == {"af-worker-image", "af-worker-io"}
    assert deployments["af-beat"]["spec"]["template"]["spec"]["containers"][0]["image"] == "agentflow:1.2.3"
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config["data"]["REDIS_URL"] == "redis://elsewhere:6379/3"


def test_helm_chart_sentinel_and_disruption_budgets():
    docs = render_chart({"redis.enabled": False, "redis.sentinels": "s0:26379,s1:26379,s2:26379",
                         "redis.sentinelMaster": "mymaster"})
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert "REDIS_URL" not in config["data"]
    assert config["data"]["REDIS_SENTINELS"] == "s0:26379,s1:26379,s2:26379"
    assert config["data"]["REDIS_SENTINEL_MASTER"] == "mymaster"
    # one budget per Deployment that serves (API, each worker group), selecting exactly its pods
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    pdbs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert set(pdbs) == {n for n in deployments if n.startswith(("af-api", "af-worker-"))}
    for name, pdb in pdbs.items():
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"] == deployments[name]["spec"]["selector"], name
    assert not [d for d in render_chart({"disruption.enabled": False}) if d["kind"] == "PodDisruptionBudget"]


def test_helm_chart_scales_a_worker_group_on_queue_depth():
    docs = render_chart({"workers.io.autoscaling.queueDepth": 8})
    hpas = {d["spec"]["scaleTargetRef"]["name"]: d["spec"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    (metric,) = hpas["af-worker-io"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "agentflow_broker_queue_messages"
    (expr,) = metric["external"]["metric"]["selector"]["matchExpressions"]
    assert expr == {"key": "queue", "operator": "In", "values": ["agentflow.db", "agentflow.api"]}
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "8"}
    assert hpas["af-worker-llm"]["metrics"][0]["resource"]["name"] == "cpu"  # the others stay on CPU


# ---------------------------------------------------------------- scripts


def test_scripts_are_valid_bash():
    for name in ("up.sh", "down.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "scripts" / name)], check=True)


def test_down_with_nothing_running(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "scripts" / "down.sh")], capture_output=True, text=True,
                         env=dict(os.environ, AGENTFLOW_HOME=str(tmp_path)), timeout=30)
    assert out.returncode == 0 and "nothing to stop" in out.stdout


def test_down_rejects_unknown_part(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "scripts" / "down.sh"), "nope"], capture_output=True, text=True,
                         env=dict(os.environ, AGENTFLOW_HOME=str(tmp_path)), timeout=30)
    assert out.returncode == 2 and "unknown part" in out.stderr


# ---------------------------------------------------------------- integration: make up / make down


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    """Running and not a zombie (orphans may wait a while for their reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def _group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def _get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _up_env(tmp_path, **extra) -> dict:
    env = dict(os.environ, AGENTFLOW_HOME=str(tmp_path / "home"), AGENTFLOW_PORT=str(_free_port()),
               AGENTFLOW_FLOWER_PORT=str(_free_port()), AGENTFLOW_DOWN_GRACE="10")
    env.pop("AGENTFLOW_HOST", None)
    env.update(extra)
    return env


def _run_up(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "up.sh")], env=env, capture_output=True,
                          text=True, timeout=100, stdin=subprocess.DEVNULL)


def test_up_refuses_a_busy_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = _run_up(_up_env(tmp_path, AGENTFLOW_PORT=str(port)))
    assert out.returncode == 1
    assert f"FAILED: api: port {port} is already in use" in out.stderr, out.stderr
    assert not list((tmp_path / "home" / "run").glob("*.pid"))


def test_up_names_an_unreachable_redis(tmp_path):
    out = _run_up(_up_env(tmp_path, REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0"))
    assert out.returncode == 1
    assert "FAILED: redis" in out.stderr, out.stderr
    assert not list((tmp_path / "home" / "run").glob("*.pid"))


@pytest.fixture
def fresh_services(tmp_path):
    """Environment for up.sh: a database name that does not exist yet (up.sh creates it; it is
    dropped afterwards), an empty Redis db, free ports, a private AGENTFLOW_HOME."""
    from tests.needs import need_postgres, need_redis

    base = need_postgres()
    import psycopg
    import redis

    need_redis("redis://127.0.0.1:6379/0")
    dbname = "af_up_" + uuid.uuid4().hex[:10]
    redis_url = f"redis://127.0.0.1:6379/{1 + uuid.uuid4().int % 15}"
    redis.Redis.from_url(redis_url).flushdb()
    env = _up_env(tmp_path, DATABASE_URL=base.rsplit("/", 1)[0] + "/" + dbname, REDIS_URL=redis_url,
                  AGENTFLOW_UP_TIMEOUT="60", AGENTFLOW_RUNS_CONCURRENCY="1", AGENTFLOW_LLM_CONCURRENCY="1",
                  AGENTFLOW_IMAGE_CONCURRENCY="1", AGENTFLOW_IO_CONCURRENCY="1")
    yield env
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    redis.Redis.from_url(redis_url).flushdb()


def _run_down(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "down.sh")], env=env, capture_output=True,
                          text=True, timeout=100, stdin=subprocess.DEVNULL)


def _pids(run_dir: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in run_dir.glob("*.pid")}


def _reap(pids: dict[str, int]) -> dict[str, int]:
    """Waits briefly for the parts to go; kills what is left (never leave a process behind)
    and returns it."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) or _group(p) for p in pids.values()):
        time.sleep(0.2)
    leftovers = {p: pid for p, pid in pids.items() if _alive(pid) or _group(pid)}
    for pid in leftovers.values():
        for member in _group(pid) or [pid]:
            try:
                os.kill(member, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return leftovers


@pytest.mark.distributed
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(150)
def test_up_and_down(fresh_services):
    env = fresh_services
    run_dir = Path(env["AGENTFLOW_HOME"]) / "run"
    api = f"http://127.0.0.1:{env['AGENTFLOW_PORT']}"
    pids: dict[str, int] = {}
    try:
        up = _run_up(env)
        pids = _pids(run_dir)
        assert up.returncode == 0, f"up.sh failed:\n{up.stdout}\n{up.stderr}"
        assert set(pids) == set(PARTS)
        assert "make down" in up.stdout and f"{api}/docs" in up.stdout
        assert all(_alive(pid) for pid in pids.values()), pids
        assert all((run_dir / f"{p}.log").stat().st_size > 0 for p in PARTS)

        status, body = _get(api + "/health/ready")
        if status == 404:  # an API without the readiness route: liveness will do
            status, body = _get(api + "/health")
        assert status == 200, body
        assert json.loads(body).get("ready", True) is True, body
        status, body = _get(f"http://127.0.0.1:{env['AGENTFLOW_FLOWER_PORT']}/healthcheck")
        assert (status, body.strip()) == (200, "OK")

        again = _run_up(env)  # idempotent: nothing new starts
        assert again.returncode == 0, f"second up.sh failed:\n{again.stdout}\n{again.stderr}"
        assert len(re.findall(r"^up: \S+ already running", again.stdout, re.M)) == len(PARTS), again.stdout
        assert _pids(run_dir) == pids
    finally:
        down = _run_down(env)
        leftovers = _reap(pids)

    assert down.returncode == 0, down.stderr
    for part in PARTS:
        assert f"stopped {part}" in down.stdout, down.stdout
    assert not leftovers, f"down.sh left processes running: {leftovers}"
    assert not list(run_dir.glob("*.pid"))


@pytest.mark.distributed
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(150)
def test_up_names_a_part_that_dies_and_stops_the_rest(fresh_services):
    env = dict(fresh_services, AGENTFLOW_HOST="256.0.0.1")  # the API cannot bind this address
    run_dir = Path(env["AGENTFLOW_HOME"]) / "run"
    started: dict[str, int] = {}
    try:
        up = _run_up(env)
        started = {m.group(1): int(m.group(2)) for m in re.finditer(r"^up: started (\S+) \(pid (\d+)\)",
                                                                      up.stdout, re.M)}
    finally:
        _run_down(env)
        leftovers = _reap(started)
    assert up.returncode == 1, up.stdout
    assert "FAILED: api: exited during start-up" in up.stderr, up.stderr
    assert f"last lines of {run_dir / 'api.log'}" in up.stderr
    assert set(started) == set(PARTS)
    assert not leftovers, f"up.sh left processes running after its failure: {leftovers}"
    assert not list(run_dir.glob("*.pid"))
