"""``whisper-streaming up``: the whole service on one machine, for development and small sites.

Starts an embedded redis-server on a free port (unless ``REDIS_URL`` is set) with AOF persistence
in a data directory, then one gateway, N VAD workers and the ASR workers of each model pool as
child processes, waits until the gateway is ready and prints its address. A child that crashes,
and the embedded Redis, are restarted with backoff (:mod:`whisper_streaming.supervisor`); every
child dies with ``up`` even when ``up`` itself is killed (PR_SET_PDEATHSIG). Ctrl-C (or SIGTERM)
stops the children in reverse order, then Redis.

Model pools (docs/architecture.md, "Model pools"): by default ``en`` = the bundled tiny.en
× ``--asr-workers`` (1) for English, and ``multi`` = the bundled multilingual base × 1 for every
other language, detection and translation. ``--pool NAME=MODEL[:N]`` (repeatable) replaces them;
``ASR_MODEL`` set in the environment (the way to pick a model before pools) replaces them by one
pool of that model × ``--asr-workers``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from shared.keys import POOL_NAME_PATTERN
from shared.settings import Settings
from whisper_streaming.procs import ServiceProcess, set_pdeathsig, spawn, stop_all
from whisper_streaming.supervisor import Watched, supervise

REDIS_MISSING = """redis-server was not found on PATH.
  Debian/Ubuntu: sudo apt-get install redis-server   (make run does this for you)
  Fedora/RHEL:   sudo dnf install redis
  macOS:         brew install redis
or point REDIS_URL at an existing Redis 7 (redis://host:6379/0)."""

STOP_GRACE_S = 15.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether ``host:port`` cannot be bound now (another ``up``, or any other server)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def default_data_dir(port: int) -> Path:
    """Where ``up`` keeps the embedded Redis's append-only file between runs: one directory per
    service port, so two ``up`` on one machine never share one."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "whisper-streaming" / f"redis-{port}"


class EmbeddedRedis:
    """A redis-server of our own on a free port: by default throw-away (temporary directory, no
    persistence); ``up`` gives it a data directory and AOF, so a restart keeps every stream."""

    def __init__(
        self,
        port: int | None = None,
        appendonly: bool = False,
        extra_args: list[str] | None = None,
        data_dir: Path | None = None,
        die_with_parent: bool = False,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit(REDIS_MISSING)
        self.binary = binary
        self.port = port or free_port()
        self.keep_dir = data_dir is not None
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            self.dir = data_dir
        else:
            self.dir = Path(tempfile.mkdtemp(prefix="whisper-streaming-redis-"))
        self.die_with_parent = die_with_parent
        self.appendonly = appendonly
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no", "--loglevel", "warning", *self.extra_args,
        ]  # fmt: skip
        # Own session: a Ctrl-C meant for `up` must not kill Redis before the workers drain.
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=set_pdeathsig if self.die_with_parent else None,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited: {err}")
            try:
                if self._ping():
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer in time")

    def _ping(self) -> bool:
        """Whether the server answers (a password-protected one answers NOAUTH)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
            if "--tls-port" not in self.extra_args:
                raw.sendall(b"PING\r\n")
                return raw.recv(64).startswith((b"+PONG", b"-NOAUTH"))
            ctx = ssl.create_default_context()  # a probe only: no certificate check
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            with ctx.wrap_socket(raw) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith((b"+PONG", b"-NOAUTH"))

    def stop(self, remove_dir: bool = True) -> None:
        if self.proc is not None:
            ServiceProcess("redis-server", self.proc).stop(5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        if remove_dir and not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


Child = ServiceProcess  # a child of ``up``: its role and its ``proc``

POOL_NAME = re.compile(POOL_NAME_PATTERN)


@dataclass(frozen=True)
class PoolSpec:
    """One model pool ``up`` starts: its name, its model (``ASR_MODEL``) and how many workers."""

    name: str
    model: str
    workers: int = 1


def parse_pool(spec: str) -> PoolSpec:
    """``NAME=MODEL[:N]`` (``multi=base:2``, ``gpu=large-v3-turbo``); raises ``ValueError``."""
    name, sep, rest = spec.partition("=")
    model, workers = rest, 1
    head, colon, tail = rest.rpartition(":")
    if colon and tail.isdigit():
        model, workers = head, int(tail)
    if not sep or not POOL_NAME.match(name) or not model or workers < 1:
        raise ValueError(
            f"--pool {spec!r}: expected NAME=MODEL[:N], NAME of lowercase letters, digits and "
            "dashes, N >= 1 (e.g. multi=base:2)"
        )
    return PoolSpec(name, model, workers)


AUTO = 0
"""A pool's worker count left to :func:`auto_asr_workers` (``--asr-workers auto``)."""


def pools_to_start(specs: list[str], asr_workers: int | None, asr_model: str) -> list[PoolSpec]:
    """The pools of one ``up``: ``--pool`` options, else one pool of ``ASR_MODEL`` if set, else
    ``en`` (tiny.en × ``--asr-workers``, :data:`AUTO` when not given) and ``multi`` (base × 1).
    Raises ``ValueError``."""
    if specs:
        if asr_workers is not None:
            raise ValueError("--asr-workers goes with the default pools; use --pool NAME=MODEL:N")
        pools = [parse_pool(s) for s in specs]
        names = [p.name for p in pools]
        if len(set(names)) != len(names):
            raise ValueError(f"--pool: a pool named twice in {names}")
        return pools
    n = AUTO if asr_workers is None else asr_workers
    if asr_workers is not None and n < 1:
        raise ValueError("--asr-workers must be at least 1 (or auto)")
    if asr_model:  # the worker derives the pool's name from what the model serves
        return [PoolSpec("", asr_model, n)]
    return [PoolSpec("en", "tiny.en", n), PoolSpec("multi", "base", 1)]


def _watch_redis(redis: EmbeddedRedis) -> Watched:
    """The embedded Redis under supervision: restarted on its port and data directory (AOF)."""

    def current() -> ServiceProcess | None:
        return ServiceProcess("redis-server", redis.proc) if redis.proc is not None else None

    return Watched("redis-server", current, redis.start)


@dataclass
class Stack:
    """The child processes of one ``up``."""

    env: dict[str, str]
    children: list[Child] = field(default_factory=list)
    _how: dict[Child, tuple[str, int, str, dict[str, str]]] = field(default_factory=dict)

    def spawn(self, role: str, index: int = 0, name: str = "", **extra: str) -> Child:
        """Start ``role`` with ``extra`` settings; ``name`` (a pool's) goes in its consumer name."""
        env = dict(self.env) | extra
        label = f"{role}-{name}" if name else role
        env["CONSUMER_NAME"] = f"{socket.gethostname()}-{label}-{index}-{os.getpid()}"
        # Own process group: a Ctrl-C in the terminal reaches only this supervisor, which then
        # stops the children in order with one SIGTERM each. Dies with the supervisor, even a
        # SIGKILLed one: no orphan keeps serving the port. Output: the terminal's.
        child = spawn(role, env=env, own_group=True, die_with_parent=True)
        self.children.append(child)
        self._how[child] = (role, index, name, extra)
        return child

    def watched(self) -> list[Watched]:
        """Each child, for :func:`supervise`: a restart replaces it in place."""
        out = []
        for i, child in enumerate(self.children):
            role, index, name, _ = self._how[child]

            def restart(i: int = i) -> None:
                role, index, name, extra = self._how.pop(self.children.pop(i))
                self.spawn(role, index, name, **extra)
                self.children.insert(i, self.children.pop())  # keep the start order

            label = f"{role} {name} {index}" if name else f"{role} {index}"
            out.append(Watched(label, lambda i=i: self.children[i], restart))
        return out

    def dead(self) -> list[Child]:
        return [c for c in self.children if not c.alive()]

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        stop_all(self.children, grace)


def wait_ready(url: str, stack: Stack, timeout: float, vad: int = 1, asr: int = 1) -> bool:
    """Until /readyz is 200 and counts every worker this stack started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.dead():
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                state = json.load(resp)
                if state.get("vad_workers", 0) >= vad and state.get("asr_workers", 0) >= asr:
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.3)
    return False


CPU_ASR_WORKERS = 2
"""``--asr-workers auto`` on a CPU of at least two cores: two workers sharing the cores. A decode
is never interrupted, so with one worker a client's finalize, or a final, waits for whatever
decode is running (another session's speculative final, a partial); with two, one of them is
free far more often (docs/benchmarks.md, *Turn-taking*)."""


def auto_asr_workers(device: str, cores: int, threads: int) -> tuple[int, int]:
    """``(ASR workers, ASR_CPU_THREADS each)`` that ``up`` starts by itself (``--asr-workers
    auto``): one on a GPU (it batches); on a CPU with ``threads`` = 0 (all cores),
    :data:`CPU_ASR_WORKERS` splitting the cores between them, one on a single core. A thread
    count the user set is kept (and the workers share the cores as they may)."""
    if device == "cuda" or cores < 2:
        return 1, threads
    workers = min(CPU_ASR_WORKERS, cores)
    return workers, threads or max(1, cores // workers)


def _auto_asr(settings: Settings, env: dict[str, str]) -> int:
    from workers.asr import device_and_compute

    device, _ = device_and_compute(settings.asr_device, settings.asr_compute_type)
    workers, threads = auto_asr_workers(device, os.cpu_count() or 1, settings.asr_cpu_threads)
    if threads:
        env["ASR_CPU_THREADS"] = str(threads)
    print(f"{workers} ASR worker(s) × {threads or 'all'} CPU threads ({device})", flush=True)
    return workers


def run_up(
    settings: Settings,
    vad_workers: int,
    pools: list[PoolSpec],
    ready_timeout: float,
    data_dir: Path | None = None,
) -> int:
    """A pool of :data:`AUTO` workers gets :func:`auto_asr_workers`."""
    if port_in_use(settings.host, settings.port):
        print(f"port {settings.port} on {settings.host} is already in use (another "
              "`whisper-streaming up`?): stop it, or choose another with PORT=…",
              file=sys.stderr)  # fmt: skip
        return 2
    redis: EmbeddedRedis | None = None
    env = dict(os.environ)
    pools = [
        dataclasses.replace(p, workers=_auto_asr(settings, env)) if p.workers == AUTO else p
        for p in pools
    ]
    if settings.redis_url is None:
        redis = EmbeddedRedis(
            appendonly=True,
            data_dir=data_dir or default_data_dir(settings.port),
            die_with_parent=True,
        )
        redis.start()
        env["REDIS_URL"] = redis.url
        print(f"embedded redis-server on {redis.url} (data in {redis.dir})", flush=True)
    env["HOST"], env["PORT"] = settings.host, str(settings.port)
    env.setdefault("AUTH_ENABLED", "false")  # development mode, unless the user says otherwise
    open_mode = env["AUTH_ENABLED"].lower() in ("false", "0", "no")
    stack = Stack(env)
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    code = 0
    try:
        for pool in pools:
            for i in range(pool.workers):
                stack.spawn(
                    "asr-worker", i, name=pool.name, ASR_MODEL=pool.model, ASR_POOL=pool.name
                )
            print(f"pool {pool.name or '(from the model)'}: {pool.model} × {pool.workers}",
                  flush=True)  # fmt: skip
        asr_workers = sum(p.workers for p in pools)
        for i in range(vad_workers):
            stack.spawn("vad-worker", i)
        stack.spawn("gateway")
        base = f"http://{settings.host}:{settings.port}"
        if not wait_ready(base + "/readyz", stack, ready_timeout, vad_workers, asr_workers):
            print("the service did not become ready; see the log above", file=sys.stderr)
            code = 1
        else:
            ws = f"ws://{settings.host}:{settings.port}"
            print(f"Whisper Streaming is up: {base}  (WebSocket {ws}/ or {ws}/ws)", flush=True)
            if open_mode:
                print(
                    "Development mode: NO AUTHENTICATION — anyone who can reach this address "
                    "can use it (set AUTH_ENABLED=true and API_KEYS to require keys). "
                    "Ctrl-C stops everything.",
                    flush=True,
                )
            else:
                print("Authentication is on. Ctrl-C stops everything.", flush=True)
            watched = stack.watched()
            if redis is not None:
                watched.append(_watch_redis(redis))
            supervise(watched, lambda: stopping)
    except KeyboardInterrupt:
        print("stopping…", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        if redis is not None:
            redis.stop()
    return code
