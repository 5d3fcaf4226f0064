"""`scripts/simulate watchers`: a fleet of real `watch` agent loops on one store.

    scripts/simulate watchers --store etcd|consul|zk --n N
                              [--per-process 2500] [--idle 60] [--no-restart]
                              [--no-release] [--url-options K=V&...]
                              [--zk-server test|stock|raised]
                              [--force] [--results BENCHMARKS.watchers.jsonl]
                              [--debug]
    scripts/simulate watchers --report [--out BENCHMARKS.md]

First it checks the machine's budget for N agents: threads (kernel.pid_max,
kernel.threads-max: an etcd or Consul agent is 6 threads, a ZooKeeper one 2,
plus one process per agent while the fleet runs its programs), open files,
memory maps per process and local ports per store address. Run as root, it
raises what is too low (sysctl -w) and says so; otherwise it says what to run
and stops. While it runs it stops a run (keeping what was measured) when the
machine's available memory falls under 1 GiB.

Starts the store on loopback (etcd: 3 members; Consul: the real agent that
/work/shared/tools/consul/install.sh unpacks, or CONVERGENT_TEST_CONSUL_BIN,
skipped with a message when neither is there; ZooKeeper standalone with
`maxClientCnxns=0`, i.e. no per-address limit, since every agent connects from
127.0.0.1), imports a view of N `web` nodes, and starts N agents: `fleet
watchers` processes of up to --per-process agents each, every agent running
the `watch` loop of the library (`convergent::commands::watch::follow`) with
its own store connection(s), its program `fleet mark`, which logs its start.
Consul's `limits.http_max_conns_per_client` is raised likewise.
Then, each step bounded by a deadline:

1. waits for every agent's first run (all N watching);
2. idle for --idle seconds: store CPU, RSS and connections, store requests,
   the agent processes' CPU; one real `convergent watch` process alongside,
   for one agent's RSS and CPU;
3. a change for one node (its override): which agents woke (logged a look
   that found nothing to do) besides that node;
4. a change for the whole cluster: latency from the `set` to each agent
   starting its command, p50/p99/max;
5. (etcd, Consul) a batch release, as the orchestrator writes it: a rollout
   record is created (threshold 0), then its threshold raised to 1%; which
   agents looked (read) and which ran, and the store requests it cost;
6. (etcd, ZooKeeper) a store restart: time until every agent follows again
   (etcd: its watcher gauge; ZooKeeper: its watch count), and the peak store
   request rate against the rate of the startup.

Every process it starts is stopped at the end, also on errors and Ctrl-C.
One JSON line of results per run goes to --results; `--report` writes the
newest result per store and size into BENCHMARKS.md.
"""

import argparse
import base64
import calendar
import hashlib
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers  # noqa: E402
from servers import REPO  # noqa: E402

CONSUL_INSTALL = "/work/shared/tools/consul/install.sh"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message):
    print(f"simulate watchers: {message}", file=sys.stderr, flush=True)


def raise_fd_limit():
    """Each agent holds up to six store connections: lift the open-files
    limit (children, the stores among them, inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        # Root may raise the hard limit too: a store member serving 3,000+
        # agents holds 20,000 connections.
        resource.setrlimit(resource.RLIMIT_NOFILE, (262144, 262144))
        return 262144
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard


def sysctl_path(name):
    return "/proc/sys/" + name.replace(".", "/")


def read_sysctl(name):
    with open(sysctl_path(name)) as f:
        return f.read().split()


def check_budget(store, n, per_process, force=False):
    """What N agents need of the kernel, against what it allows. As root,
    raises what is short (and says so); otherwise says what to run and
    returns None. Returns the list of changes made."""
    threads = store.threads_per_agent * n
    per_agent = f"{store.threads_per_agent} threads an agent on {store.name}"
    busiest = store.connections_per_address(n, per_process)
    files = max(busiest, 6 * min(n, per_process)) + 1000
    # (setting, needed, why, value to set)
    need = [
        # While the fleet runs its programs, up to one process per agent.
        ("kernel.pid_max", threads + n + 20000, f"{per_agent}, a process per agent's run",
         None),
        ("kernel.threads-max", threads + n + 20000, per_agent, None),
        # Each thread's stack is a mapping and its guard page another.
        ("vm.max_map_count", 2 * store.threads_per_agent * min(n, per_process) + 10000,
         f"two memory maps a thread, {per_agent}, up to {per_process:,} agents a process", None),
        ("fs.nr_open", files, "open files in the busiest process", None),
    ]
    short = []
    for name, wanted, why, value in need:
        have = int(read_sysctl(name)[0])
        if have < wanted:
            short.append((name, have, wanted, why, value or str(wanted)))
    low, high = (int(v) for v in read_sysctl("net.ipv4.ip_local_port_range"))
    ports_needed = busiest + 2000
    if high - low + 1 < ports_needed:
        short.append(("net.ipv4.ip_local_port_range", f"{low} {high}", ports_needed,
                      "local ports for the connections to one store address", "1024 65535"))
    # Open files: the busiest store process holds one per connection; a
    # fleet process six per agent, and a few while it starts programs.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < files:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
        except (ValueError, OSError) as e:
            why = (f"the open-files limit is {hard:,} and cannot be raised here ({e}: "
                   f"root without CAP_SYS_RESOURCE, e.g. in a container); {n:,} agents need "
                   f"{files:,} in the busiest process ({busiest:,} "
                   f"connections to one server process of {store.name})")
            if not force:
                log(f"{why}. Run with fewer agents, or with --force to see where it fails")
                return None
            log(f"--force: going on although {why}")
            raised = raise_sysctls(short, n)
            if raised is None:
                return None
            return [f"open files: {files:,} needed, limit {hard:,} (cannot be raised)"] + raised
    return raise_sysctls(short, n)


def raise_sysctls(short, n):
    """Raises the kernel settings in `short` (as root), saying so; None when
    not root (after saying what to run)."""
    changes = []
    for name, have, wanted, reason, value in short:
        why = f"{name} is {have}; {n:,} agents need {wanted:,} ({reason})"
        if os.geteuid() != 0:
            log(f"{why}. Run as root: sysctl -w {name}='{value}' (or run this as root)")
            continue
        subprocess.run(["sysctl", "-q", "-w", f"{name}={value}"], check=True)
        log(f"RAISED {name} from {have} to {value}: {why}")
        changes.append(f"{name}: {have} -> {value}")
    if short and os.geteuid() != 0:
        return None
    return changes


def mem_available_mib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


class Watchdog:
    """Samples load and memory while polling; stops a run that would
    exhaust the machine's memory."""

    FLOOR_MIB = 1024

    def __init__(self):
        self.peak_load = 0.0
        self.min_available_mib = mem_available_mib()

    def check(self):
        self.peak_load = max(self.peak_load, os.getloadavg()[0])
        available = mem_available_mib()
        self.min_available_mib = min(self.min_available_mib, available)
        if available < self.FLOOR_MIB:
            raise RuntimeError(
                f"stopped: only {available} MiB of memory available "
                f"(floor {self.FLOOR_MIB} MiB; load {os.getloadavg()[0]:.0f})")


WATCHDOG = Watchdog()


def proc_cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except OSError:
        return 0.0


def proc_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pids(pid):
    """`pid` and its descendants (a JVM or a wrapper's children)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


def established_to(ports):
    """Established TCP connections whose local port is one of `ports` (the
    server side, counted once)."""
    wanted = {f"{p:04X}" for p in ports}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "01" and parts[1].rsplit(":", 1)[1] in wanted:
                        count += 1
        except OSError:
            pass
    return count


def b64(text):
    return base64.b64encode(text.encode()).decode()


class EtcdStore:
    name = "etcd, 3 members"
    # The loop and one thread per watched tree.
    threads_per_agent = 6

    def __init__(self):
        self.server = servers.Etcd(members=3)

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)

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


class ZooKeeperStore:
    name = "ZooKeeper 3.8, standalone"
    # The loop and the client's runtime thread.
    threads_per_agent = 2

    def __init__(self, server="test"):
        self.server = servers.ZooKeeper(extra="maxClientCnxns=0\n" + ZK_SERVERS[server])

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)

    def urls(self, processes):
        return [self.url()] * processes

    def url(self):
        return f"zk://{self.server.address}"

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


class ConsulStore:
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

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)

    def urls(self, processes):
        return [self.url()] * processes

    def url(self):
        return f"consul://{self.server.address}"

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


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1)]


def read_marks(path):
    """{node: [(generation, unix_ns)]} from `fleet mark` lines."""
    marks = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:
                    marks.setdefault(parts[0], []).append((parts[1], int(parts[2])))
    except FileNotFoundError:
        pass
    return marks


def poll(condition, timeout, what, every=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        WATCHDOG.check()
        if condition():
            return time.monotonic()
        time.sleep(every)
    raise RuntimeError(f"{what}: not within {timeout:.0f}s "
                       f"(load {os.getloadavg()[0]:.0f}, {mem_available_mib()} MiB available)")


class Fleet:
    """The `fleet watchers` processes; stopped on exit."""

    def __init__(self, fleet_bin, urls, n, per_process, work):
        self.marks = os.path.join(work, "marks")
        self.until = os.path.join(work, "stop")
        self.logs = []
        self.processes = []
        first = 1
        for i, url in enumerate(urls):
            count = min(per_process, n - first + 1)
            if count <= 0:
                break
            log_path = os.path.join(work, f"agents-{i}.log")
            self.logs.append(log_path)
            self.processes.append(subprocess.Popen(
                [fleet_bin, "watchers", "--store", url, "--first", str(first),
                 "--count", str(count), "--program", fleet_bin, "--marks", self.marks,
                 "--dir", os.path.join(work, f"agents-{i}"), "--until", self.until,
                 "--timeout", "10s"],
                stdout=subprocess.DEVNULL, stderr=open(log_path, "w")))
            first += count

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        open(self.until, "w").close()
        for p in self.processes:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def cpu_s(self):
        return sum(proc_cpu_s(p.pid) for p in self.processes)

    def rss_kib(self):
        return sum(proc_rss_kib(p.pid) for p in self.processes)

    def log_sizes(self):
        return [os.path.getsize(p) for p in self.logs]

    def log_since(self, sizes):
        out = []
        for path, size in zip(self.logs, sizes):
            with open(path, errors="replace") as f:
                f.seek(size)
                out.extend(f.read().splitlines())
        return out


NODE_IN_LOG = re.compile(r"convergent watch web/(web-\d+): (.*)")
STAMPED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) convergent watch web/(web-\d+): "
                     r"generation .* differs")


def decided_at(lines):
    """{node: unix seconds} of each agent's first "differs: running" line."""
    out = {}
    for line in lines:
        if (m := STAMPED.search(line)) and m.group(2) not in out:
            out[m.group(2)] = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%SZ"))
    return out


def run(args, install):
    release = not args.debug
    profile_dir = "release" if release else "debug"
    install(release)  # Debian packages (etcd, ZooKeeper), then the build
    convergent_bin = os.path.join(REPO, "target", profile_dir, "convergent")
    fleet_bin = os.path.join(REPO, "target", profile_dir, "examples", "fleet")
    store_class = {"etcd": EtcdStore, "consul": ConsulStore, "zk": ZooKeeperStore}[args.store]
    budget = check_budget(store_class, args.n, args.per_process, args.force)
    if budget is None:
        log("STOPPED: the machine's limits are too low for this many agents (see above)")
        return None
    fd_limit = raise_fd_limit()
    if args.store == "consul":
        binary = consul_binary()
        if not binary:
            log(f"SKIPPED: no Consul agent ({CONSUL_INSTALL} absent, "
                "CONVERGENT_TEST_CONSUL_BIN unset)")
            return None
        store = ConsulStore(binary, args.n)
    elif args.store == "etcd":
        store = EtcdStore()
    else:
        store = ZooKeeperStore(args.zk_server)
    n = args.n
    processes = max(1, math.ceil(n / args.per_process))
    options = f"?{args.url_options}" if args.url_options else ""
    result = {"store": store.name, "n": n, "processes": processes, "fd_limit": fd_limit,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "load_before": os.getloadavg()[0], "build": profile_dir,
              "limits_raised": budget, "url_options": args.url_options,
              "mem_available_mib_before": mem_available_mib(),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                       capture_output=True, text=True).stdout.strip()}
    if args.store == "zk":
        result["zk_server"] = args.zk_server
    for change in budget:
        log(f"limit raised for this run: {change}")
    # In memory when the machine has /dev/shm: each agent writes and syncs
    # three small files per run, which on a real node is its own disk's
    # business, not N nodes' on one shared disk.
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    work = tempfile.mkdtemp(prefix="convergent-watchers-", dir=shm)
    watch_proc = None
    try:
        with store:
            url = store.url()

            def cv(*a, **kw):
                return subprocess.run([convergent_bin, "--store", url, *a], check=True,
                                      capture_output=True, text=True, timeout=120, **kw)

            view = os.path.join(work, "view.yml")
            with open(view, "w") as f:
                subprocess.run([fleet_bin, "view", "--nodes", str(n)], stdout=f, check=True)
            cv("import", view)
            # The store's own footprint without agents, to count theirs.
            base_pids = [p for pid in store.pids() for p in tree_pids(pid)]
            base_rss = sum(proc_rss_kib(p) for p in base_pids) / 1024
            base_conns = established_to(store.ports())
            started = time.monotonic()
            req0 = store.requests()
            urls = [u + options for u in store.urls(processes)]
            with Fleet(fleet_bin, urls, n, args.per_process, work) as fleet:
                # 1. Every agent's first run.
                poll(lambda: len(read_marks(fleet.marks)) >= n, 120 + n / 20,
                     f"the first run of all {n} agents")
                result["startup_s"] = time.monotonic() - started
                if req0 is not None:
                    result["startup_requests_per_s"] = (store.requests() - req0) / result["startup_s"]
                # One real agent process alongside, for one agent's own cost.
                watch_proc = subprocess.Popen(
                    [convergent_bin, "--store", url + options,
                     "--cache-dir", os.path.join(work, "one-cache"),
                     "watch", "--cluster", "web", "--node", "web-single",
                     "--output", os.path.join(work, "one.json"), "--exec", "/bin/true"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(3)  # let it start and run once before the idle measure
                # 2. Idle.
                pids = [p for pid in store.pids() for p in tree_pids(pid)]
                cpu0 = sum(proc_cpu_s(p) for p in pids)
                fleet_cpu0 = fleet.cpu_s()
                one_cpu0 = proc_cpu_s(watch_proc.pid)
                req0 = store.requests()
                t0 = time.monotonic()
                while time.monotonic() - t0 < args.idle:
                    WATCHDOG.check()
                    time.sleep(min(1.0, max(0.0, args.idle - (time.monotonic() - t0))))
                idle = time.monotonic() - t0
                per_k = 1000 / n
                result["idle_s"] = idle
                result["store_cpu_pct_per_1000"] = (
                    (sum(proc_cpu_s(p) for p in pids) - cpu0) / idle * 100 * per_k)
                result["store_rss_mib"] = sum(proc_rss_kib(p) for p in pids) / 1024
                result["store_rss_mib_base"] = base_rss
                result["store_rss_mib_per_1000"] = (result["store_rss_mib"] - base_rss) * per_k
                result["store_connections"] = established_to(store.ports())
                result["store_connections_per_1000"] = (
                    (result["store_connections"] - base_conns) * per_k)
                if req0 is not None:
                    result["idle_requests_per_agent_min"] = (
                        (store.requests() - req0) / idle * 60 / (n + 1))
                result["fleet_cpu_pct"] = (fleet.cpu_s() - fleet_cpu0) / idle * 100
                result["fleet_rss_mib"] = fleet.rss_kib() / 1024
                result["one_agent_rss_mib"] = proc_rss_kib(watch_proc.pid) / 1024
                result["one_agent_cpu_s_per_hour"] = (
                    (proc_cpu_s(watch_proc.pid) - one_cpu0) / idle * 3600)
                # 3. A change for one node: nobody else should look.
                sizes = fleet.log_sizes()
                target = "web-00001"
                cv("set", "--cluster", "web", "--node", target, "state=off")
                poll(lambda: any(g for g, _ in read_marks(fleet.marks).get(target, [])[1:]),
                     60, f"{target} running for its own change")
                time.sleep(5)  # wakes come at once; give late ones a moment
                # A wake is a look: it logs what it found (nothing to do, or
                # a generation that differs).
                woken = {m.group(1) for line in fleet.log_since(sizes)
                         if (m := NODE_IN_LOG.search(line)) and m.group(1) != target
                         and ("nothing to do" in m.group(2) or "differs" in m.group(2))}
                result["woken_not_theirs"] = len(woken)
                # 4. A change for the whole cluster: everyone runs.
                before = {node: len(runs) for node, runs in read_marks(fleet.marks).items()}
                sizes = fleet.log_sizes()
                t_set = time.time_ns()
                cv("set", "--cluster", "web", "version=9.9.9")

                def all_ran():
                    marks = read_marks(fleet.marks)
                    return sum(len(marks.get(node, [])) > count
                               for node, count in before.items()) >= n

                poll(all_ran, 120 + n / 10, "every agent running for the cluster change")
                marks = read_marks(fleet.marks)
                latencies = [(runs[before[node]][1] - t_set) / 1e9
                             for node, runs in marks.items() if len(runs) > before.get(node, 0)]
                result["latency_p50_s"] = percentile(latencies, 50)
                result["latency_p99_s"] = percentile(latencies, 99)
                result["latency_max_s"] = max(latencies)
                result["told"] = len(latencies)
                # When each agent had read and decided to run (its log line,
                # whole seconds): the store's and the agent's part, before
                # this machine starts N programs out of a few huge processes.
                decided = decided_at(fleet.log_since(sizes))
                late = [max(0.0, at - t_set / 1e9) for at in decided.values()]
                result["decided_p50_s"] = percentile(late, 50)
                result["decided_p99_s"] = percentile(late, 99)
                result["decided_max_s"] = max(late) if late else None
                # 5. A batch release.
                if getattr(store, "put_raw", None) and not args.no_release:
                    result.update(batch_release(store, fleet, n))
                # 6. A store restart.
                if store.restart and not args.no_restart:
                    expected = n * store.watches_per_agent()
                    poll(lambda: store.watching() >= expected, 60, "all watching before restart")
                    down_at = store.restart()
                    back_at = time.monotonic()
                    rates, last, last_t = [], store.requests(), time.monotonic()

                    def all_back():
                        nonlocal last, last_t
                        now, t = store.requests(), time.monotonic()
                        rates.append((now - last) / (t - last_t))
                        last, last_t = now, t
                        return store.watching() >= expected

                    poll(all_back, 300, "all agents watching again after the restart", every=1)
                    result["restart_down_s"] = back_at - down_at
                    result["restart_all_watching_s"] = time.monotonic() - back_at
                    result["restart_peak_requests_per_s"] = max(rates) if rates else 0
            result["load_after"] = os.getloadavg()[0]
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        # What was measured before the failure is kept, marked.
        result["error"] = str(e)[:300]
        result["load_after"] = os.getloadavg()[0]
    finally:
        result["peak_load"] = WATCHDOG.peak_load
        result["mem_available_mib_min"] = WATCHDOG.min_available_mib
        if watch_proc:
            servers.stop(watch_proc)
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return result


def rank(rollout_id, node):
    """A node's rank in a rollout, as src/rollout/rank.rs computes it."""
    digest = hashlib.sha256(f"{rollout_id}/{node}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / 2**53


RELEASE_ID = "simulate-release"
RELEASE_THRESHOLD = 0.01


def batch_release(store, fleet, n):
    """A rollout record appears (threshold 0: nobody released), then its
    threshold goes to 1%: the write the orchestrator makes to release a
    batch. Every agent follows the record, so every agent wakes and reads;
    only the batch should run. Returns the figures."""
    key = "convergent/rollouts/web"

    def record(threshold):
        return json.dumps({"id": RELEASE_ID, "status": "running", "threshold": threshold,
                           "patch": {"release": "r1"}})

    def looked(sizes):
        return {m.group(1) for line in fleet.log_since(sizes)
                if (m := NODE_IN_LOG.search(line))
                and ("nothing to do" in m.group(2) or "differs" in m.group(2))}

    def settled(sizes):
        state = {"count": -1, "since": time.monotonic()}

        def check():
            count = len(looked(sizes))
            if count != state["count"]:
                state.update(count=count, since=time.monotonic())
                return False
            # Everyone looked, or nobody more for 10 s.
            return count >= n or time.monotonic() - state["since"] > 10

        return check

    out = {}
    sizes = fleet.log_sizes()
    store.put_raw(key, record(0.0))
    poll(settled(sizes), 120 + n / 10, "the agents looking at the new rollout record")
    out["rollout_created_looks"] = len(looked(sizes))
    marks = read_marks(fleet.marks)
    before = {node: len(runs) for node, runs in marks.items()}
    batch = {node for node in before if rank(RELEASE_ID, node) <= RELEASE_THRESHOLD}
    sizes = fleet.log_sizes()
    req0 = store.requests()
    events0 = store.events() if hasattr(store, "events") else None
    t_set = time.time_ns()
    t0 = time.monotonic()
    store.put_raw(key, record(RELEASE_THRESHOLD))

    def batch_ran():
        now = read_marks(fleet.marks)
        return all(len(now.get(node, [])) > before[node] for node in batch)

    poll(batch_ran, 120 + n / 10, f"the {len(batch)} agents of the batch running")
    poll(settled(sizes), 120 + n / 10, "the agents looking at the release")
    elapsed = time.monotonic() - t0
    marks = read_marks(fleet.marks)
    ran = {node for node, runs in marks.items() if len(runs) > before.get(node, 0)}
    latencies = [(marks[node][before[node]][1] - t_set) / 1e9 for node in batch]
    woke = looked(sizes)
    out.update({
        "release_batch": len(batch),
        "release_batch_ran": len(ran & batch),
        "release_others_ran": len(ran - batch),
        "release_others_looked": len(woke - batch),
        "release_p99_s": (percentile(latencies, 99)
                          if getattr(store, "release_latency", True) else None),
        "release_window_s": elapsed,
    })
    if req0 is not None:
        out["release_requests"] = store.requests() - req0
    if events0 is not None:
        out["release_watch_events"] = store.events() - events0
    return out


def fmt(value, spec, unit=""):
    return "—" if value is None else f"{value:{spec}}{unit}"


def report(results_path, out):
    """The newest result per store and size, as tables in `out` between the
    `<!-- watchers -->` markers (before the fleet simulation's)."""
    latest, sessions = {}, {}
    with open(results_path) as f:
        for line in f:
            r = json.loads(line)
            # Debug builds only check the machinery; runs with other session
            # settings are in the ZooKeeper session table only.
            if r.get("build") == "release" and not r.get("url_options") \
                    and r.get("zk_server", "test") == "test":
                latest[(r["store"], r["n"])] = r
            if r.get("build") == "release" and "zk_server" in r:
                sessions[(r["zk_server"], r.get("url_options", ""), r["n"])] = r
    rows = sorted(latest.values(), key=lambda r: (r["store"], r["n"]))
    lines = [
        "## Watch agents at fleet scale",
        "",
        "`scripts/simulate watchers --store S --n N`: N real `watch` agent loops "
        "(`fleet watchers`, up to 2,500 per process, each agent with its own store "
        "connections) and their program `fleet mark`; see scripts/watchers.py for "
        "what each step does. Load is the machine's 1-minute load average when the "
        "run started (2 cores, shared).",
        "",
        "### Change to command",
        "",
        "| store | agents | startup (all running) | p50 | p99 | max | told | woken by another "
        "node's change | read and decided p50 / p99 | load before / peak | commit | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['store']} | {r['n']:,} | {fmt(r.get('startup_s'), '.1f', ' s')} "
            f"| {fmt(r.get('latency_p50_s'), '.2f', ' s')} "
            f"| {fmt(r.get('latency_p99_s'), '.2f', ' s')} "
            f"| {fmt(r.get('latency_max_s'), '.2f', ' s')} | {r.get('told', 0):,} "
            f"| {r.get('woken_not_theirs', '—')} "
            f"| {fmt(r.get('decided_p50_s'), '.0f', ' s')} / {fmt(r.get('decided_p99_s'), '.0f', ' s')} "
            f"| {r['load_before']:.0f} / {fmt(r.get('peak_load'), '.0f')} | {r.get('commit', '')} "
            f"| {r.get('error', '').replace('|', '/')[:220] or '—'} |")
    lines += [
        "",
        "### Idle cost",
        "",
        "| store | agents | store CPU / 1,000 agents | store RSS / 1,000 agents "
        "| connections / 1,000 agents | requests / idle agent / min | agents' processes "
        "CPU, RSS | one `convergent watch`: RSS, CPU / hour |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['store']} | {r['n']:,} | {fmt(r.get('store_cpu_pct_per_1000'), '.1f', '%')} "
            f"| {fmt(r.get('store_rss_mib_per_1000'), '.0f', ' MiB')} "
            f"| {fmt(r.get('store_connections_per_1000'), ',.0f')} "
            f"| {fmt(r.get('idle_requests_per_agent_min'), '.2f')} "
            f"| {fmt(r.get('fleet_cpu_pct'), '.1f', '%')}, {fmt(r.get('fleet_rss_mib'), '.0f', ' MiB')} "
            f"| {fmt(r.get('one_agent_rss_mib'), '.1f', ' MiB')}, "
            f"{fmt(r.get('one_agent_cpu_s_per_hour'), '.2f', ' s')} |")
    lines += [
        "",
        "### Store restart",
        "",
        "| store | agents | store down | all watching again after | peak requests/s "
        "| startup requests/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "restart_all_watching_s" not in r:
            continue
        lines.append(
            f"| {r['store']} | {r['n']:,} | {fmt(r.get('restart_down_s'), '.1f', ' s')} "
            f"| {fmt(r.get('restart_all_watching_s'), '.1f', ' s')} "
            f"| {fmt(r.get('restart_peak_requests_per_s'), ',.0f')} "
            f"| {fmt(r.get('startup_requests_per_s'), ',.0f')} |")
    lines += [
        "",
        "### A batch release",
        "",
        "A rollout record for the cluster appears with threshold 0, then its threshold "
        "goes to 1%: the one write the orchestrator makes per batch. Every agent follows "
        "that key. Looked = read the store and found nothing to do (or something to run).",
        "",
        "| store | agents | looks when the record appeared | batch | batch ran | others ran "
        "| others looked | store requests | watch events | batch p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "release_batch" not in r:
            continue
        lines.append(
            f"| {r['store']} | {r['n']:,} | {r.get('rollout_created_looks', 0):,} "
            f"| {r['release_batch']:,} | {r['release_batch_ran']:,} "
            f"| {r['release_others_ran']:,} | {r['release_others_looked']:,} "
            f"| {fmt(r.get('release_requests'), ',.0f')} "
            f"| {fmt(r.get('release_watch_events'), ',.0f')} "
            f"| {fmt(r.get('release_p99_s'), '.2f', ' s')} |")
    if sessions:
        lines += [
            "",
            "### ZooKeeper sessions and idle packets",
            "",
            "| server's session bounds | agents' URL options | agents | packets / idle agent "
            "/ min | idle window | commit |",
            "|---|---|---:|---:|---:|---|",
        ]
        for (server, options, n), r in sorted(sessions.items()):
            bounds = {"test": "tests' (tickTime 500 ms, max 60 s)",
                      "stock": "stock (tickTime 2 s, max 40 s)",
                      "raised": "raised (tickTime 2 s, max 10 min)"}[server]
            lines.append(
                f"| {bounds} | {options or '(none: 30 s)'} | {n:,} "
                f"| {fmt(r.get('idle_requests_per_agent_min'), '.2f')} "
                f"| {fmt(r.get('idle_s'), '.0f', ' s')} | {r.get('commit', '')} |")
    raised = sorted({c for r in rows for c in r.get("limits_raised") or []})
    if raised:
        lines += ["", "Limits raised or found short for these runs: " + "; ".join(raised) + "."]
    text = open(out).read()
    start, end = "<!-- watchers -->", "<!-- /watchers -->"
    block = start + "\n\n" + "\n".join(lines) + "\n\n" + end
    if start in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        head, tail = text.split("<!-- simulate -->", 1)
        text = head + block + "\n\n<!-- simulate -->" + tail
    with open(out, "w") as f:
        f.write(text)
    log(f"wrote {out}")


def main(argv, install):
    parser = argparse.ArgumentParser(prog="scripts/simulate watchers")
    parser.add_argument("--store", choices=["etcd", "consul", "zk"], required=True)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--per-process", type=int, default=2500)
    parser.add_argument("--idle", type=float, default=60)
    parser.add_argument("--no-restart", action="store_true")
    parser.add_argument("--no-release", action="store_true", help="skip the batch release")
    parser.add_argument("--force", action="store_true",
                        help="run although the open-files limit is too low for N (to see where "
                             "it fails)")
    parser.add_argument("--url-options", default="",
                        help="appended to the agents' store URL, e.g. session_timeout=40s")
    parser.add_argument("--zk-server", choices=sorted(ZK_SERVERS), default="test",
                        help="ZooKeeper's session bounds: the tests' (up to 60 s), a stock "
                             "server's (4-40 s) or raised (up to 10 min)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--debug", action="store_true", help="debug build (quicker to build)")
    # Kept with the sources, so that the tables can be rendered again (and
    # each row traced to its commit) on another checkout.
    parser.add_argument("--results", default=os.path.join(REPO, "BENCHMARKS.watchers.jsonl"))
    parser.add_argument("--report", action="store_true",
                        help="only write the tables of --results into --out")
    parser.add_argument("--out", default=os.path.join(REPO, "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    if args.report:
        report(args.results, args.out)
        return 0
    result = run(args, install)
    if result is None:
        return 0
    if "error" in result:
        log(f"FAILED: {result['error']} (partial results kept)")
    print(json.dumps(result, indent=1))
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "a") as f:
        f.write(json.dumps(result) + "\n")
    return 0
