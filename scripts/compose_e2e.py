"""Container end-to-end test: the project's real Dockerfile and docker-compose.yml, built and run.

    python scripts/compose_e2e.py            # or: make e2e   (CI: .ci/run runs it after the tests)

Needs a running Docker engine with Compose v2, or ../shared/docker/engine.sh beside the checkout, which
sets one up on an offline machine (stand-in base images, a local wheel index): then this script starts
it, and stops it again at the end. Without either it fails and says why: it never passes silently.

In order, each a check with a measured figure:
  1. build the image from the checkout (`docker build`, the default target): time and size
  2. `docker compose up -d` on a project of its own: time until the first 200 from POST /predict
     through the load balancer (the image carries the default model: no training step)
  3. predictions through nginx: labels right for clear texts, one text and many, X-Request-ID echoed
  4. /docs and /redoc render offline: every file the pages load is on this host and answers 200
  5. api and lb inspected: non-root, read-only root filesystem, all capabilities dropped,
     no-new-privileges; a write to / fails inside api
  6. `python -m scripts.overload` at 10x capacity straight at the api container (2,048 connections):
     its memory peak (cgroup) stays under the 1 GiB limit, no OOM kill, no restart, nothing accepted lost
  7. `--scale api=2`: requests spread over both replicas (their own /metrics counts)
  8. one replica stopped (`docker stop`) under load from 8 clients: every request 200, none over 1 s
  9. one replica's server killed (SIGKILL, a crash) under load: every request 200 (nginx retries on
     the other), and docker restarts it
 10. `docker compose stop` while large requests are in flight: every one of them answers 200
 11. `docker compose down` (volumes kept) and `up` again: nothing rebuilt, the volumes reused, time
     to the first 200
Then `docker compose down -v` and the engine stopped, also when a check fails or the script is
interrupted. Writes bench/results/compose_e2e.json and .md; exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ENGINE_SH = REPO.parent / "shared" / "docker" / "engine.sh"
RESULTS = REPO / "bench" / "results"
PROJECT = "sentiment-e2e"  # its own compose project: a running `sentiment-service` stack is left alone
IMAGE_TAG = "e2e"
MEMORY_LIMIT = 1024**3  # docker-compose.yml: api's deploy.resources.limits.memory
POSITIVE = "a warm, funny and beautifully acted film that I loved from start to finish"
NEGATIVE = "a dull, lifeless and painfully boring mess of a movie"
STOP_REQUESTS = 12  # in flight when `docker compose stop` begins; 1,536 chunks: under the bulk queue (2,048)
LONG_TEXT = " ".join(
    ["the plot wanders, the acting is wooden, yet the score is lovely and the final act moves me"] * 12
)


class CheckFailed(Exception):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(
    cmd: list[str], *, env: dict[str, str] | None = None, check: bool = True, timeout: float = 900
) -> str:
    """Runs a command, returns its stdout; on failure raises with the command and its output."""
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise CheckFailed(f"`{shlex.join(cmd)}` exited {r.returncode}:\n{(r.stdout + r.stderr)[-3000:]}")
    return r.stdout


# --- engine ---------------------------------------------------------------------------------------


class Engine:
    """The Docker engine to use: one already running, or the one ../shared/docker/engine.sh starts."""

    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.started = False
        self.build_args: list[str] = []

    def up(self) -> None:
        if ENGINE_SH.exists():
            self._prefill_wheels()
            log(f"setting up the engine with {ENGINE_SH} (first time: a few minutes)")
            r = subprocess.run(["bash", str(ENGINE_SH), "up", str(REPO)], capture_output=True, text=True)
            sys.stderr.write(r.stderr[-4000:])
            if r.returncode != 0:
                raise CheckFailed(f"{ENGINE_SH} up exited {r.returncode}: no Docker engine to test with")
            self.started = True
            for key, value in re.findall(r"^export (\w+)=(.*)$", r.stdout, re.M):
                self.env[key] = value
            self.build_args = [
                "--build-arg",
                f"PYTHON_IMAGE={self.env['PYTHON_IMAGE']}",
                "--build-arg",
                f"TORCH_INDEX_URL={self.env['TORCH_INDEX_URL']}",
            ]
        if subprocess.run(["docker", "info"], capture_output=True, env=self.env).returncode != 0:
            raise CheckFailed(
                "no Docker engine answers `docker info`: start one (or put shared/docker/engine.sh beside "
                "the checkout) and run again; the container test cannot pass without one"
            )
        if subprocess.run(["docker", "compose", "version"], capture_output=True, env=self.env).returncode:
            raise CheckFailed("`docker compose` (Compose v2) is missing: docker-compose.yml needs v2")

    def _prefill_wheels(self) -> None:
        """engine.sh's wheel index holds the newest wheels that pyproject.toml allows; the image installs
        the exact versions of requirements.lock. Put those in its wheel folder first, so the index
        holds both and the build never depends on when the index was made."""
        work = Path(os.environ.get("WORK", Path(os.environ.get("TMPDIR", "/tmp")) / "sentiment-docker"))
        (work / "wheelhouse").mkdir(parents=True, exist_ok=True)
        log("downloading the wheels of requirements.lock for the engine's index")
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--only-binary=:all:",
                "--no-deps",
                "--require-hashes",
                "-r",
                str(REPO / "requirements.lock"),
                "-d",
                str(work / "wheelhouse"),
            ],
            env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise CheckFailed(f"could not download the locked wheels:\n{r.stderr[-2000:]}")

    def down(self) -> None:
        if self.started:
            log("stopping the engine (engine.sh down)")
            subprocess.run(["bash", str(ENGINE_SH), "down"], capture_output=True)


# --- compose and HTTP helpers ---------------------------------------------------------------------


class Stack:
    def __init__(self, engine: Engine, port: int) -> None:
        self.port = port
        self.env = {
            **engine.env,
            "SENTIMENT_IMAGE_TAG": IMAGE_TAG,
            "SENTIMENT_HTTP_PORT": str(port),
            "SENTIMENT_HTTP_BIND": "127.0.0.1",
        }
        # A user's shell settings must not change what is tested.
        for key in (
            "SENTIMENT_API_MODEL_DIR",
            "SENTIMENT_WORKERS",
            "SENTIMENT_TORCH_THREADS",
            "COMPOSE_FILE",
        ):
            self.env.pop(key, None)
        self.url = f"http://127.0.0.1:{port}"

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        return run(["docker", "compose", "-p", PROJECT, *args], env=self.env, check=check, timeout=timeout)

    def docker(self, *args: str, check: bool = True) -> str:
        return run(["docker", *args], env=self.env, check=check)

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).split()

    def inspect(self, container: str) -> dict[str, Any]:
        return json.loads(self.docker("inspect", container))[0]

    def wait_healthy(self, containers: list[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [self.inspect(c)["State"].get("Health", {}).get("Status") for c in containers]
            if all(s == "healthy" for s in states):
                return
            time.sleep(0.5)
        raise CheckFailed(f"containers not healthy after {timeout:g} s: {states}")

    def in_container(self, container: str, path: str) -> str:
        """GET http://127.0.0.1:8000{path} from inside a container (replicas have no published port)."""
        code = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000{path}').read().decode())"
        return self.docker("exec", container, "python", "-c", code)

    def predicted_200s(self, container: str) -> float:
        text = self.in_container(container, "/metrics")
        m = re.search(
            r'^sentiment_requests_total\{[^}]*route="/predict"[^}]*status="200"[^}]*\} (\S+)', text, re.M
        )
        return float(m.group(1)) if m else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def wait_first_200(url: str, timeout: float) -> float:
    """Seconds until POST /predict first answers 200."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            if http("POST", f"{url}/predict", {"text": POSITIVE}, timeout=2)[0] == 200:
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.2)
    raise CheckFailed(f"no 200 from {url}/predict within {timeout:g} s")


class Load:
    """`clients` threads, each POSTing one text after another over its own keep-alive connection,
    recording (start, latency, status) per request; a connection error counts as status 0."""

    def __init__(self, port: int, clients: int, body: dict[str, Any] | None = None) -> None:
        self.port, self.clients = port, clients
        self.body = json.dumps(body or {"text": POSITIVE}).encode()
        self.results: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def _client(self) -> None:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Content-Type": "application/json"}
        while not self._stop.is_set():
            t = time.perf_counter()
            try:
                conn.request("POST", "/predict", self.body, headers)
                r = conn.getresponse()
                r.read()
                status = r.status
            except OSError:
                status = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            with self._lock:
                self.results.append((t, time.perf_counter() - t, status))
        conn.close()

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def summary(self, since: float = 0.0) -> dict[str, Any]:
        rows = [r for r in self.results if r[0] >= since]
        lat = sorted(r[1] for r in rows)
        return {
            "requests": len(rows),
            "statuses": dict(Counter(str(r[2]) for r in rows)),
            "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
            "max_ms": round(lat[-1] * 1000, 1) if lat else None,
        }


# --- the checks -----------------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []
        self.figures: dict[str, Any] = {}

    def check(self, name: str, ok: bool, measured: Any) -> None:
        self.checks.append({"name": name, "pass": bool(ok), "measured": measured})
        log(f"{'PASS' if ok else 'FAIL'}: {name}: {measured}")

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """A step whose unexpected error is a failed check (the later steps still run when they can)."""
        log(f"--- {name}")
        try:
            yield
        except (CheckFailed, OSError, KeyError, ValueError, subprocess.TimeoutExpired) as e:
            self.check(name, False, f"error: {e}")


def build(stack: Stack, engine: Engine, rep: Report) -> None:
    t = time.perf_counter()
    stack.docker("build", *engine.build_args, "-t", f"sentiment-service:{IMAGE_TAG}", ".")
    seconds = time.perf_counter() - t
    size = stack.inspect(f"sentiment-service:{IMAGE_TAG}")["Size"]
    rep.figures.update(build_s=round(seconds, 1), image_mb=round(size / 1e6))
    rep.check(
        "image builds from the checkout (default target)", True, f"{seconds:.0f} s, {size / 1e6:.0f} MB"
    )


def first_up(stack: Stack, rep: Report) -> None:
    t = time.perf_counter()
    stack.compose("up", "-d", "--no-build")
    seconds = time.perf_counter() - t + wait_first_200(stack.url, 180)
    rep.figures["up_to_first_200_s"] = round(seconds, 1)
    rep.check(
        "`docker compose up` serves the image's default model: first 200 within 60 s",
        seconds <= 60,
        f"{seconds:.1f} s",
    )


def predictions(stack: Stack, rep: Report) -> None:
    status, headers, body = http("POST", f"{stack.url}/predict", {"texts": [POSITIVE, NEGATIVE]})
    labels = [p["label"] for p in json.loads(body)["predictions"]] if status == 200 else []
    rep.check(
        "predictions through nginx: right labels for clear texts",
        labels == ["positive", "negative"],
        f"{status} {labels}",
    )
    status, headers, _ = http("GET", f"{stack.url}/info")
    rep.check(
        "X-Request-ID comes back through nginx",
        status == 200 and bool(headers.get("x-request-id")),
        f"{status}, X-Request-ID {headers.get('x-request-id')!r}",
    )
    status, headers, body = http("POST", f"{stack.url}/predict", {"text": ""})
    code = json.loads(body).get("error", {}).get("code") if body.startswith(b"{") else body[:80]
    rep.check("bad input through nginx: 422 in the API's error body", status == 422, f"{status} {code}")


def docs_offline(stack: Stack, rep: Report) -> None:
    outside, fetched = [], {}
    for page in ("/docs", "/redoc"):
        status, _, html = http("GET", stack.url + page)
        fetched[page] = status
        refs = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html.decode())
        for ref in refs:
            if re.match(r"^(https?:)?//", ref):
                outside.append(f"{page}: {ref}")
            else:
                fetched[ref] = http("GET", stack.url + ref)[0]
    bad = {k: v for k, v in fetched.items() if v != 200}
    rep.check(
        "/docs and /redoc load only files from this host, each 200",
        not outside and not bad and len(fetched) >= 5,
        f"{len(fetched)} fetched, outside {outside or 'none'}, not 200 {bad or 'none'}",
    )


def locked_down(stack: Stack, rep: Report) -> None:
    for service in ("api", "lb"):
        info = stack.inspect(stack.containers(service)[0])
        hc = info["HostConfig"]
        facts = {
            "read_only": hc["ReadonlyRootfs"],
            "cap_drop": hc.get("CapDrop"),
            "no_new_privileges": "no-new-privileges:true" in (hc.get("SecurityOpt") or []),
        }
        ok = facts["read_only"] and facts["cap_drop"] == ["ALL"] and facts["no_new_privileges"]
        if service == "api":
            c = stack.containers("api")[0]
            facts["uid"] = stack.docker("exec", c, "id", "-u").strip()
            r = subprocess.run(
                ["docker", "exec", c, "touch", "/opt/x"], capture_output=True, text=True, env=stack.env
            )
            facts["write_to_root"] = r.stderr.strip() or f"exit {r.returncode}"
            ok = ok and facts["uid"] == "10001" and r.returncode != 0 and "Read-only" in r.stderr
        rep.check(
            f"{service}: read-only root, capabilities dropped, no-new-privileges"
            + (", non-root" if service == "api" else ""),
            ok,
            facts,
        )


def cgroup_memory(container_id: str) -> Path:
    for p in (
        Path(f"/sys/fs/cgroup/memory/docker/{container_id}"),
        Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope"),
    ):
        if p.exists():
            return p
    raise CheckFailed(f"no memory cgroup found for container {container_id[:12]}")


def server_pid(info: dict[str, Any]) -> int:
    """The host's pid of a container's server process: the child of docker-init (compose `init: true`)."""
    init_pid = info["State"]["Pid"]
    children = Path(f"/proc/{init_pid}/task/{init_pid}/children").read_text().split()
    return int(children[0]) if children else init_pid


def overload(stack: Stack, rep: Report, duration: float) -> None:
    cid = stack.containers("api")[0]
    info = stack.inspect(cid)
    pid = server_pid(info)
    cg = cgroup_memory(info["Id"])
    peak_file = cg / "memory.max_usage_in_bytes"
    if peak_file.exists():
        peak_file.write_text("0")  # cgroup v1: reset the high-water mark to the current usage
    restarts = info["RestartCount"]
    name = "compose_overload"
    # Straight at the container, not through nginx: nginx holds at most ~1,000 requests at a time (1,024
    # connections per worker, two per proxied request), fewer than the queue's 1,024 texts, so through
    # it the queue never fills and a "10x" load only waits (measured: 0 x 503, every answer a late 200).
    ip = next(iter(info["NetworkSettings"]["Networks"].values()))["IPAddress"]
    cmd = [
        sys.executable, "-m", "scripts.overload", "--host", ip, "--port", "8000",
        "--pid", str(pid), "--duration", str(duration), "--baseline-seconds", "5",
        "--recovery-seconds", "8", "--name", name,
    ]  # fmt: skip
    log(" ".join(cmd[1:]))
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=duration + 180)
    res = json.loads((RESULTS / f"{name}.json").read_text())
    peak = int(peak_file.read_text()) if peak_file.exists() else int((cg / "memory.peak").read_text())
    after = stack.inspect(cid)
    rep.figures.update(
        overload_peak_mib=round(peak / 2**20),
        overload_capacity_texts_s=round(res["baseline"]["texts_per_s"]),
        overload_statuses=res["burst"]["statuses"],
        overload_unanswered=res["unanswered"]["total"],
    )
    rep.check(
        "api under 10x overload: memory peak under the 1 GiB limit, no OOM kill, no restart",
        peak < MEMORY_LIMIT and not after["State"]["OOMKilled"] and after["RestartCount"] == restarts,
        f"cgroup peak {peak / 2**20:.0f} MiB, OOMKilled {after['State']['OOMKilled']}, "
        f"restarts {after['RestartCount'] - restarts}",
    )
    refused = res["burst"]["statuses"].get("503", 0)
    rep.check(
        "api under 10x overload: refused with 503 + Retry-After, nothing accepted lost, no other 5xx",
        refused > 0
        and res["burst"]["retry_after_503"] == refused
        and res["unanswered"]["total"] == 0
        and res["other_5xx"] == 0,
        f"capacity {res['baseline']['texts_per_s']:.0f} texts/s; burst answers {res['burst']['statuses']}; "
        f"unanswered {res['unanswered']['total']}, other 5xx {res['other_5xx']} (overload.py exit "
        f"{r.returncode}; bench/results/{name}.md)",
    )


def scale_two(stack: Stack, rep: Report) -> list[str]:
    stack.compose("up", "-d", "--no-build", "--no-recreate", "--scale", "api=2")
    replicas = stack.containers("api")
    stack.wait_healthy(replicas)
    time.sleep(1.5)  # nginx re-resolves `api` at most every second
    before = {c: stack.predicted_200s(c) for c in replicas}
    for _ in range(60):
        http("POST", f"{stack.url}/predict", {"text": POSITIVE})
    share = {c[:12]: stack.predicted_200s(c) - before[c] for c in replicas}
    rep.check(
        "--scale api=2: both replicas answer (each ≥ 20 of 60)",
        len(share) == 2 and min(share.values()) >= 12,
        share,
    )
    return replicas


def replica_lost_under_load(stack: Stack, rep: Report, replicas: list[str], how: str) -> None:
    victim = replicas[0]
    with Load(stack.port, 8) as load:
        time.sleep(2.0)
        t = time.perf_counter()
        if how == "kill":  # a crash: SIGKILL to the server process (docker kill would count as a stop)
            os.kill(server_pid(stack.inspect(victim)), signal.SIGKILL)
        else:
            stack.docker("stop", victim)
        time.sleep(4.0)
    s = load.summary()
    after = load.summary(since=t)
    ok = s["statuses"] == {"200": s["requests"]} and (how == "kill" or s["max_ms"] < 1000)
    label = "SIGKILL" if how == "kill" else "docker stop"
    rep.figures[f"replica_{how}"] = {"all": s, "after_signal": after}
    rep.check(
        f"one of two replicas lost ({label}) under 8 clients: every request 200"
        + (", none over 1 s" if how == "stop" else ""),
        ok,
        f"{s['requests']} requests {s['statuses']}, p50 {s['p50_ms']} ms, slowest {s['max_ms']} ms "
        f"({after['requests']} after the signal, slowest {after['max_ms']} ms)",
    )
    # Back to two: a stopped replica is started again; a crashed one docker restarts by itself
    # (restart: unless-stopped).
    if how == "stop":
        stack.docker("start", victim)
    t = time.perf_counter()
    stack.wait_healthy(replicas)
    if how == "kill":
        restarts = stack.inspect(victim)["RestartCount"]
        rep.check(
            "the crashed replica is restarted by docker and healthy again",
            restarts >= 1,
            f"restart count {restarts}, healthy {time.perf_counter() - t:.0f} s after the crash",
        )
    time.sleep(1.5)


def stop_drains(stack: Stack, rep: Report) -> None:
    results: list[tuple[int, float]] = []
    body = {"texts": [LONG_TEXT] * 64}

    def one() -> None:
        try:
            status = http("POST", f"{stack.url}/predict", body, timeout=60)[0]
        except OSError:
            status = 0
        results.append((status, time.perf_counter()))

    # Enough work that some is still queued when the stop begins: with 8 requests and a 0.5 s wait, a
    # quick run had answered all 8 before the stop, which proves nothing about draining.
    threads = [threading.Thread(target=one) for _ in range(STOP_REQUESTS)]
    for th in threads:
        th.start()
    time.sleep(0.2)
    t = time.perf_counter()
    stack.compose("stop")
    stop_s = time.perf_counter() - t
    for th in threads:
        th.join(60)
    statuses = Counter(s for s, _ in results)
    after = sum(1 for _, done in results if done > t)
    rep.figures["compose_stop"] = {
        "statuses": dict(statuses),
        "answered_after_stop_began": after,
        "stop_s": round(stop_s, 1),
    }
    rep.check(
        f"`docker compose stop` with {STOP_REQUESTS} × 64 long texts in flight: every one answered 200",
        statuses == Counter({200: STOP_REQUESTS}) and after > 0,
        f"{dict(statuses)}, {after} answered after the stop began, stop took {stop_s:.1f} s",
    )


def second_up(stack: Stack, rep: Report) -> None:
    image = stack.inspect(f"sentiment-service:{IMAGE_TAG}")["Id"]
    # The volumes `up` made (`models`, mounted by api; data-cache is only the training services'), each
    # marked with a file on the host: still there after the next `up` means the same volume.
    names = stack.docker(
        "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"
    ).split()
    marks = [
        Path(stack.docker("volume", "inspect", "-f", "{{.Mountpoint}}", v).strip()) / ".e2e-mark"
        for v in names
    ]
    for m in marks:
        m.write_text("made by the first up\n")
    stack.compose("down")
    t = time.perf_counter()
    out = stack.compose("up", "-d")  # no --no-build: it must find the image and build nothing
    seconds = time.perf_counter() - t + wait_first_200(stack.url, 180)
    same_image = stack.inspect(stack.containers("api")[0])["Image"] == image
    same_volumes = bool(marks) and all(m.exists() for m in marks)
    rep.figures["second_up_to_first_200_s"] = round(seconds, 1)
    rep.check(
        "second `up`: same image (nothing built), same volumes",
        same_image and same_volumes and "Building" not in out,
        f"first 200 after {seconds:.1f} s, image reused {same_image}, volumes {names} reused {same_volumes}",
    )


def write(rep: Report, total_s: float) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    res = {
        "checks": rep.checks,
        "figures": rep.figures,
        "total_s": round(total_s),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python scripts/compose_e2e.py",
    }
    (RESULTS / "compose_e2e.json").write_text(json.dumps(res, indent=2))
    lines = [
        "# Container end-to-end test (scripts/compose_e2e.py)",
        "",
        f"{res['when']}, {os.cpu_count()} CPUs, {total_s:.0f} s in all.",
        "",
        "| check | result | measured |",
        "| --- | --- | --- |",
    ]
    for c in rep.checks:
        m = c["measured"] if isinstance(c["measured"], str) else json.dumps(c["measured"])
        m = " ".join(m.replace("|", "/").split())  # one table row
        lines.append(f"| {c['name']} | {'PASS' if c['pass'] else 'FAIL'} | {m} |")
    path = RESULTS / "compose_e2e.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--overload-seconds", type=float, default=20, help="length of the 10x burst (20)")
    p.add_argument("--keep", action="store_true", help="leave the stack and engine running at the end")
    args = p.parse_args()

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    t0 = time.perf_counter()
    rep, engine = Report(), Engine()
    stack: Stack | None = None
    try:
        engine.up()
        stack = Stack(engine, free_port())
        stack.compose("down", "-v", "--remove-orphans", check=False)  # leftovers of an interrupted run
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("build", lambda: build(stack, engine, rep)),
            ("first up", lambda: first_up(stack, rep)),
        ]
        for name, fn in steps:  # nothing else can run without these two
            log(f"--- {name}")
            fn()
        with rep.step("predictions"):
            predictions(stack, rep)
        with rep.step("docs offline"):
            docs_offline(stack, rep)
        with rep.step("locked down"):
            locked_down(stack, rep)
        with rep.step("overload"):
            overload(stack, rep, args.overload_seconds)
        with rep.step("scale to two"):
            replicas = scale_two(stack, rep)
            for how in ("stop", "kill"):
                with rep.step(f"replica {how}"):
                    replica_lost_under_load(stack, rep, replicas, how)
        with rep.step("compose stop drains"):
            stop_drains(stack, rep)
        with rep.step("second up"):
            second_up(stack, rep)
    except CheckFailed as e:
        rep.check("set-up", False, str(e))
    finally:
        if stack is not None and not args.keep:
            log("tearing down (docker compose down -v)")
            stack.compose("down", "-v", "--remove-orphans", "--timeout", "30", check=False)
        if not args.keep:
            engine.down()
    total = time.perf_counter() - t0
    print(write(rep, total).read_text())
    failed = [c["name"] for c in rep.checks if not c["pass"]]
    if failed or not rep.checks:
        print(f"compose_e2e: {len(failed)} check(s) failed: {failed}", file=sys.stderr)
        return 1
    print(f"compose_e2e: all {len(rep.checks)} checks passed in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
