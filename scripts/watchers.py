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
import calendar
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers  # noqa: E402
from servers import REPO  # noqa: E402

from watcher_machine import (  # noqa: E402
    WATCHDOG, check_budget, established_to, log, mem_available_mib, proc_cpu_s,
    proc_rss_kib, raise_fd_limit, tree_pids)
from watcher_stores import (  # noqa: E402
    CONSUL_INSTALL, ZK_SERVERS, ConsulStore, EtcdStore, ZooKeeperStore, consul_binary)


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
