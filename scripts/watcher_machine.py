"""The machine side of `scripts/simulate watchers`: its limits for N agents
(checked, and raised as root), its memory and load while a run goes on, and
what a process costs (from /proc)."""

import os
import resource
import subprocess
import sys

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
