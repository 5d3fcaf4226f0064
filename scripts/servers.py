"""Real servers for scripts/bench and scripts/simulate, on free loopback ports
with temporary data folders, stopped when their `with` block ends (also on
an error or Ctrl-C): etcd (one member or several), a Consul dev agent when
CONVERGENT_TEST_CONSUL_BIN names one, ZooKeeper standalone, and the counting
proxy of `examples/fleet`.

Standard library only.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONVERGENT = os.path.join(REPO, "target", "release", "convergent")
FLEET = os.path.join(REPO, "target", "release", "examples", "fleet")


def free_port():
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout}s")


def stop(process, grace=5.0):
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Etcd:
    """`members` etcd members on loopback; `.endpoints` is `H:P,H:P,…`."""

    def __init__(self, members=1, binary="etcd"):
        self.dir = tempfile.mkdtemp(prefix="convergent-bench-etcd-")
        self.members = []
        ports = [(free_port(), free_port()) for _ in range(members)]
        cluster = ",".join(f"m{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(ports))
        for i, (client, peer) in enumerate(ports):
            data = os.path.join(self.dir, f"m{i}")
            log = open(os.path.join(self.dir, f"m{i}.log"), "w")
            args = [
                binary, "--name", f"m{i}", "--data-dir", data,
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", os.path.basename(self.dir),
                "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}",
            ]
            self.members.append(
                (f"127.0.0.1:{client}", subprocess.Popen(args, stdout=log, stderr=log))
            )
        self.endpoints = ",".join(addr for addr, _ in self.members)

    def __enter__(self):
        for addr, _ in self.members:
            wait_until(lambda a=addr: _etcd_healthy(a), 30, f"etcd member {addr}")
        return self

    def __exit__(self, *exc):
        for _, process in self.members:
            stop(process)
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def first(self):
        return self.members[0][0]

    def pids(self):
        return [p.pid for _, p in self.members]


def _etcd_healthy(addr):
    with urllib.request.urlopen(f"http://{addr}/health", timeout=1) as r:
        return json.load(r).get("health") == "true"


class Consul:
    """A `consul agent -dev` (data in memory) when CONVERGENT_TEST_CONSUL_BIN is set."""

    def __init__(self, binary, extra=None):
        self.dir = tempfile.mkdtemp(prefix="convergent-bench-consul-")
        self.port = free_port()
        config = {
            "node_name": "convergent-bench",
            "bind_addr": "127.0.0.1",
            "client_addr": "127.0.0.1",
            "advertise_addr": "127.0.0.1",
            "ports": {
                "http": self.port, "dns": -1, "grpc": -1,
                "serf_lan": free_port(), "serf_wan": free_port(), "server": free_port(),
            },
            "disable_update_check": True,
            "log_level": "warn",
        }
        config.update(extra or {})
        path = os.path.join(self.dir, "agent.json")
        with open(path, "w") as f:
            json.dump(config, f)
        log = open(os.path.join(self.dir, "consul.log"), "w")
        self.process = subprocess.Popen(
            [binary, "agent", "-dev", "-config-file", path], stdout=log, stderr=log
        )
        self.address = f"127.0.0.1:{self.port}"

    def __enter__(self):
        def leader():
            with urllib.request.urlopen(f"http://{self.address}/v1/status/leader", timeout=1) as r:
                return json.load(r) not in ("", None)

        wait_until(leader, 30, "consul")
        return self

    def __exit__(self, *exc):
        stop(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


class ZooKeeper:
    """ZooKeeper standalone from Debian's package (Java on the machine)."""

    JAR = "/usr/share/java/zookeeper.jar"

    def __init__(self, extra=""):
        self.dir = tempfile.mkdtemp(prefix="convergent-bench-zk-")
        self.port = free_port()
        os.makedirs(os.path.join(self.dir, "data"))
        config = os.path.join(self.dir, "zoo.cfg")
        with open(config, "w") as f:
            f.write(
                "tickTime=500\n"
                f"dataDir={self.dir}/data\n"
                f"clientPort={self.port}\n"
                "clientPortAddress=127.0.0.1\n"
                "admin.enableServer=false\n"
                "4lw.commands.whitelist=ruok,srvr,mntr\n"
                "maxSessionTimeout=60000\n"
                + extra
            )
        log = open(os.path.join(self.dir, "zk.log"), "w")
        self.process = subprocess.Popen(
            ["java", "-cp", f"/etc/zookeeper/conf:{self.JAR}",
             "org.apache.zookeeper.server.ZooKeeperServerMain", config],
            stdout=log, stderr=log,
        )
        self.address = f"127.0.0.1:{self.port}"

    def __enter__(self):
        # `ruok` answers before the server serves; `srvr` names its mode
        # only once it does.
        def serving():
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"srvr")
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
                return b"Mode:" in answer

        wait_until(serving, 60, "zookeeper")
        return self

    def __exit__(self, *exc):
        stop(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


class Proxy:
    """`fleet proxy` in front of `target`: counts requests, writes and bytes."""

    def __init__(self, target):
        self.dir = tempfile.mkdtemp(prefix="convergent-bench-proxy-")
        self.stats_file = os.path.join(self.dir, "stats.json")
        self.address = f"127.0.0.1:{free_port()}"
        self.process = subprocess.Popen(
            [FLEET, "proxy", "--listen", self.address, "--to", target, "--stats", self.stats_file]
        )

    def __enter__(self):
        wait_until(lambda: os.path.exists(self.stats_file), 10, "the counting proxy")
        return self

    def __exit__(self, *exc):
        stop(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)

    def counts(self):
        """The counts so far, once they have settled (the proxy writes them
        every 100 ms)."""
        last = None
        while True:
            with open(self.stats_file) as f:
                now = json.load(f)
            if now == last:
                return now
            last = now
            time.sleep(0.25)
