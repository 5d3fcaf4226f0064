"""The stores `scripts/simulate watchers` runs agents against (etcd, 3
members; ZooKeeper; Consul): how to start, address, count and restart each."""

import base64
import json
import math
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.request

import servers
from watcher_machine import log, tree_pids

CONSUL_INSTALL = "/work/shared/tools/consul/install.sh"


def b64(text):
    return base64.b64encode(text.encode()).decode()


class ServerStore:
    """A store run by `self.server`, a servers.* context manager. By default
    every fleet process reaches it at the one address `scheme://address`;
    a store of several members says otherwise (EtcdStore)."""

    scheme = None

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)

    def urls(self, processes):
        return [self.url()] * processes

    def url(self):
        return f"{self.scheme}://{self.server.address}"


class EtcdStore(ServerStore):
    name = "etcd, 3 members"
    # The loop and one thread per watched tree.
    threads_per_agent = 6

    def __init__(self):
        self.server = servers.Etcd(members=3)

    def urls(self, processes):
        addrs = [a for a, _ in self.server.members]
        # Each process lists the members in another order, as a fleet
        # spread over the members would (and one member's ephemeral
        # ports would not suffice for 50,000 streams).
        return [
            "etcd://" + ",".join(addrs[i % 3:] + addrs[: i % 3]) for i in range(processes)
        ]

    def url(self):
        return "etcd://" + self.server.endpoints

    def pids(self):
        return self.server.pids()

    def ports(self):
        return [int(a.rsplit(":", 1)[1]) for a, _ in self.server.members]

    def metric(self, name, addr):
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
            total = 0.0
            for line in r.read().decode().splitlines():
                if line.startswith(name):
                    total += float(line.rsplit(" ", 1)[1])
            return total

    def requests(self):
        """gRPC calls and streams started, over all members (the JSON gateway
        turns each HTTP request into one)."""
        return sum(self.metric("grpc_server_started_total", a) for a, _ in self.server.members)

    def watching(self):
        return sum(
            self.metric("etcd_debugging_mvcc_watcher_total", a) for a, _ in self.server.members
        )

    def events(self):
        """Watch events sent to watchers, over all members."""
        return sum(
            self.metric("etcd_debugging_mvcc_events_total", a) for a, _ in self.server.members
        )

    def watches_per_agent(self):
        return 5

    @staticmethod
    def connections_per_address(n, per_process):
        """Process i of the fleet talks to member i % 3 first (see urls)."""
        agents = [0, 0, 0]
        for i in range(math.ceil(n / per_process)):
            agents[i % 3] += min(per_process, n - i * per_process)
        return 6 * max(agents)

    def put_raw(self, key, text):
        """One put, as the orchestrator's write of a rollout record is."""
        addr = self.server.members[0][0]
        body = json.dumps({"key": b64(key), "value": b64(text)}).encode()
        req = urllib.request.Request(f"http://{addr}/v3/kv/put", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def restart(self):
        for _, p in self.server.members:
            p.send_signal(signal.SIGTERM)
        for _, p in self.server.members:
            # A member holding 25,000 streams took more than 30 s to stop.
            try:
                p.wait(120)
            except subprocess.TimeoutExpired:
                log("an etcd member did not stop within 120 s of SIGTERM: killed")
                p.kill()
                p.wait()
        down_at = time.monotonic()
        self.server.members = [
            (addr, subprocess.Popen(p.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for addr, p in self.server.members
        ]
        for addr, _ in self.server.members:
            servers.wait_until(lambda a=addr: servers._etcd_healthy(a), 60, f"etcd {addr}")
        return down_at


ZK_SERVERS = {
    # servers.ZooKeeper as the tests run it: tickTime 500 ms, sessions up to 60 s.
    "test": "",
    # A stock server's session bounds: tickTime 2 s, so sessions of 4-40 s.
    "stock": "tickTime=2000\nminSessionTimeout=4000\nmaxSessionTimeout=40000\n",
    # Sessions up to 10 min.
    "raised": "tickTime=2000\nmaxSessionTimeout=600000\n",
}


class ZooKeeperStore(ServerStore):
    name = "ZooKeeper 3.8, standalone"
    # The loop and the client's runtime thread.
    threads_per_agent = 2

    scheme = "zk"

    def __init__(self, server="test"):
        self.server = servers.ZooKeeper(extra="maxClientCnxns=0\n" + ZK_SERVERS[server])

    def pids(self):
        return tree_pids(self.server.process.pid)

    def ports(self):
        return [self.server.port]

    def mntr(self):
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10) as s:
            s.sendall(b"mntr")
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        out = {}
        for line in answer.decode().splitlines():
            parts = line.split("\t")
            if len(parts) == 2:
                try:
                    out[parts[0]] = float(parts[1])
                except ValueError:
                    pass
        return out

    def requests(self):
        return self.mntr().get("zk_packets_received", 0.0)

    def watching(self):
        # One persistent recursive watch per tree an agent follows.
        return self.mntr().get("zk_watch_count", 0.0)

    def watches_per_agent(self):
        return 5

    @staticmethod
    def connections_per_address(n, per_process):
        return n

    def put_raw(self, key, text):
        """One write with ZooKeeper's own CLI (created with its directories
        when absent). Its JVM starts in about a second, so the release
        latency is not taken from it."""
        cli = ["/usr/share/zookeeper/bin/zkCli.sh", "-server", self.server.address]

        def call(*command):
            return subprocess.run(cli + list(command), capture_output=True, text=True,
                                   timeout=60)

        parts = key.split("/")
        for i in range(1, len(parts)):
            call("create", "/" + "/".join(parts[:i]))
        path = "/" + key
        created = call("create", path, text)
        if "already exists" in created.stdout + created.stderr:
            call("set", path, text)

    # The CLI's JVM start is in the time from the write to a run.
    release_latency = False

    def restart(self):
        servers.stop(self.server.process)
        down_at = time.monotonic()
        log_file = open(os.path.join(self.server.dir, "zk.log"), "a")
        self.server.process = subprocess.Popen(
            self.server.process.args, stdout=log_file, stderr=log_file
        )
        self.server.__enter__()
        return down_at


class ConsulStore(ServerStore):
    scheme = "consul"
    name = "Consul 1.10.12, one dev agent"
    # The loop and one blocking-query thread per watched tree.
    threads_per_agent = 6

    def __init__(self, binary, n):
        # Every simulated agent connects from 127.0.0.1: lift the per-client
        # connection limit (default 200) above the fleet's six per agent.
        # Prometheus metrics, for the count of HTTP requests it served.
        # Consul refuses a per-client limit above its open-files limit.
        per_client = min(8 * n + 100, resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 100)
        self.server = servers.Consul(
            binary, {"limits": {"http_max_conns_per_client": per_client},
                     "telemetry": {"prometheus_retention_time": "1h",
                                   "disable_hostname": True}})

    @staticmethod
    def connections_per_address(n, per_process):
        return n * 6

    def put_raw(self, key, text):
        req = urllib.request.Request(f"http://{self.server.address}/v1/kv/{key}",
                                     data=text.encode(), method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def pids(self):
        return [self.server.process.pid]

    def ports(self):
        return [self.server.port]

    def requests(self):
        """HTTP requests served (a blocking query counts when it answers)."""
        url = f"http://{self.server.address}/v1/agent/metrics?format=prometheus"
        with urllib.request.urlopen(url, timeout=10) as r:
            return sum(float(line.rsplit(" ", 1)[1]) for line in r.read().decode().splitlines()
                       if line.startswith("consul_api_http_count{"))

    def watching(self):
        return None

    def watches_per_agent(self):
        return 5

    restart = None


def consul_binary():
    binary = os.environ.get("CONVERGENT_TEST_CONSUL_BIN")
    if binary and os.access(binary, os.X_OK):
        return binary
    if os.access(CONSUL_INSTALL, os.X_OK):
        out = subprocess.run([CONSUL_INSTALL], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[-1]
    return None
