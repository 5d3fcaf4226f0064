"""`scripts/simulate watchers`: a fleet of real `watch` agent loops on one store.

    scripts/simulate watchers --store etcd|consul|zk --n N
                              [--per-process 2500] [--idle 60] [--no-restart]
                              [--results target/watchers.jsonl] [--debug]
    scripts/simulate watchers --report [--out BENCHMARKS.md]

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
5. (etcd, ZooKeeper) a store restart: time until every agent follows again,
   and the peak store request rate against the rate of the startup.

Every process it starts is stopped at the end, also on errors and Ctrl-C.
One JSON line of results per run goes to --results; `--report` writes the
newest result per store and size into BENCHMARKS.md.
"""

import argparse
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


class EtcdStore:
    name = "etcd, 3 members"

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

    def watches_per_agent(self):
        return 5

    def restart(self):
        for _, p in self.server.members:
            p.send_signal(signal.SIGTERM)
        for _, p in self.server.members:
            p.wait(30)
        down_at = time.monotonic()
        self.server.members = [
            (addr, subprocess.Popen(p.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for addr, p in self.server.members
        ]
        for addr, _ in self.server.members:
            servers.wait_until(lambda a=addr: servers._etcd_healthy(a), 60, f"etcd {addr}")
        return down_at


class ZooKeeperStore:
    name = "ZooKeeper 3.8, standalone"

    def __init__(self):
        self.server = servers.ZooKeeper(extra="maxClientCnxns=0\n")

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
        # Watches are per znode and path; an agent holds data and child
        # watches on its trees: count the sessions instead.
        return self.mntr().get("zk_num_alive_connections", 0.0)

    def watches_per_agent(self):
        return 1

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

    def __init__(self, binary, n):
        # Every simulated agent connects from 127.0.0.1: lift the per-client
        # connection limit (default 200) above the fleet's six per agent.
        self.server = servers.Consul(
            binary, {"limits": {"http_max_conns_per_client": 8 * n + 100}})

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)

    def urls(self, processes):
        return [self.url()] * processes

    def url(self):
        return f"consul://{self.server.address}"

    def pids(self):
        return [self.server.process.pid]

    def ports(self):
        return [self.server.port]

    def requests(self):
        return None

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
        if condition():
            return time.monotonic()
        time.sleep(every)
    raise RuntimeError(f"{what}: not within {timeout:.0f}s")


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


def run(args, install):
    release = not args.debug
    profile_dir = "release" if release else "debug"
    install(release)  # Debian packages (etcd, ZooKeeper), then the build
    convergent_bin = os.path.join(REPO, "target", profile_dir, "convergent")
    fleet_bin = os.path.join(REPO, "target", profile_dir, "examples", "fleet")
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
        store = ZooKeeperStore()
    n = args.n
    processes = max(1, math.ceil(n / args.per_process))
    result = {"store": store.name, "n": n, "processes": processes, "fd_limit": fd_limit,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "load_before": os.getloadavg()[0], "build": profile_dir,
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                       capture_output=True, text=True).stdout.strip()}
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
            with Fleet(fleet_bin, store.urls(processes), n, args.per_process, work) as fleet:
                # 1. Every agent's first run.
                poll(lambda: len(read_marks(fleet.marks)) >= n, 120 + n / 20,
                     f"the first run of all {n} agents")
                result["startup_s"] = time.monotonic() - started
                if req0 is not None:
                    result["startup_requests_per_s"] = (store.requests() - req0) / result["startup_s"]
                # One real agent process alongside, for one agent's own cost.
                watch_proc = subprocess.Popen(
                    [convergent_bin, "--store", url, "--cache-dir", os.path.join(work, "one-cache"),
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
                time.sleep(args.idle)
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
                # 5. A store restart.
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
        if watch_proc:
            servers.stop(watch_proc)
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return result


def fmt(value, spec, unit=""):
    return "—" if value is None else f"{value:{spec}}{unit}"


def report(results_path, out):
    """The newest result per store and size, as tables in `out` between the
    `<!-- watchers -->` markers (before the fleet simulation's)."""
    latest = {}
    with open(results_path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("build") == "release":  # debug builds only check the machinery
                latest[(r["store"], r["n"])] = r
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
        "node's change | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['store']} | {r['n']:,} | {fmt(r.get('startup_s'), '.1f', ' s')} "
            f"| {fmt(r.get('latency_p50_s'), '.2f', ' s')} "
            f"| {fmt(r.get('latency_p99_s'), '.2f', ' s')} "
            f"| {fmt(r.get('latency_max_s'), '.2f', ' s')} | {r.get('told', 0):,} "
            f"| {r.get('woken_not_theirs', '—')} | {r['load_before']:.0f} |")
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
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--debug", action="store_true", help="debug build (quicker to build)")
    parser.add_argument("--results", default=os.path.join(REPO, "target", "watchers.jsonl"))
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
