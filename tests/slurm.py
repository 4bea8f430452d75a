"""A real SLURM cluster on this host for the tests: munge, slurmctld and two slurmd nodes.

Everything lives in one temporary directory (config, keys, state, logs); the daemons are the
Debian packages' (`apt-get install slurmctld slurmd slurm-client munge`), started with their
own `slurm.conf` through `SLURM_CONF`, and stopped by PID. Every SLURM command runs under a
timeout: when authentication fails, they retry for minutes.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel")
INSTALL = "apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"


def missing() -> list[str]:
    """The SLURM and munge programs this host lacks (searched in PATH and the sbin dirs)."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [d for d in DAEMONS if shutil.which(d, path=path) is None]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Cluster:
    """munged + slurmctld + `nodes` slurmd daemons (one CPU each) on 127.0.0.1."""

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1):
        self.root = tempfile.mkdtemp(prefix="infini_jax_slurm_")
        os.chmod(self.root, 0o755)  # munge's socket directory must be searchable
        self.nodes = [f"node{i + 1}" for i in range(nodes)]  # SLURM sorts nodes by name
        self.cpus = cpus_per_node
        self.pids: dict[str, int] = {}
        self.env = dict(os.environ, SLURM_CONF=os.path.join(self.root, "slurm.conf"))
        self.env["PATH"] = self.env.get("PATH", "") + ":/usr/sbin:/sbin"

    def path(self, *names: str) -> str:
        return os.path.join(self.root, *names)

    def _write_config(self) -> None:
        ctld, *node_ports = _free_ports(1 + len(self.nodes))
        for d in ("state", "log", "munge", "key"):
            os.makedirs(self.path(d), exist_ok=True)
        os.chmod(self.path("munge"), 0o755)
        os.chmod(self.path("key"), 0o700)
        nodes = "\n".join(
            f"NodeName={n} NodeAddr=127.0.0.1 Port={p} CPUs={self.cpus} State=UNKNOWN"
            for n, p in zip(self.nodes, node_ports, strict=True)
        )
        with open(self.path("slurm.conf"), "w") as f:
            f.write(
                f"""ClusterName=infini_jax_test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.path("munge", "socket")}
CredType=cred/munge
StateSaveLocation={self.path("state")}
SlurmdSpoolDir={self.path("spool-%n")}
SlurmctldPidFile={self.path("slurmctld.pid")}
SlurmdPidFile={self.path("slurmd-%n.pid")}
SlurmctldLogFile={self.path("log", "slurmctld.log")}
SlurmdLogFile={self.path("log", "slurmd-%n.log")}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait=30
InactiveLimit=0
MinJobAge=600
SlurmdTimeout=30
JobRequeue=1
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
            )

    def _daemon(self, name: str, cmd: list[str]) -> None:
        log = open(self.path("log", f"{name}.stdout"), "w")  # noqa: SIM115 - the daemon's
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.pids[name] = proc.pid

    def start(self, deadline_s: float = 60) -> float:
        """Starts the daemons and waits until every node is idle; the seconds it took."""
        start = time.perf_counter()
        self._write_config()
        key = self.path("key", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        self._daemon(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={self.path('munge', 'socket')}",
                f"--key-file={key}",
                f"--pid-file={self.path('munge', 'munged.pid')}",
                f"--log-file={self.path('log', 'munged.log')}",
                f"--seed-file={self.path('munge', 'seed')}",
            ],
        )
        self._wait(lambda: os.path.exists(self.path("munge", "socket")), 10, "munged's socket")
        self._daemon("slurmctld", ["slurmctld", "-D", "-i"])
        for n in self.nodes:
            self._daemon(f"slurmd-{n}", ["slurmd", "-D", "-N", n])
        self._wait(self._all_idle, deadline_s - (time.perf_counter() - start), "idle nodes")
        return time.perf_counter() - start

    def _all_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout
        states = dict(line.split() for line in out.splitlines() if line.strip())
        return all(states.get(n) == "idle" for n in self.nodes)

    def _wait(self, ready, seconds: float, what: str) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            if ready():
                return
            dead = [n for n, pid in self.pids.items() if not _alive(pid)]
            if dead:
                raise RuntimeError(f"{dead} exited while waiting for {what}:\n{self.logs()}")
            time.sleep(0.2)
        raise TimeoutError(f"no {what} within {seconds:.0f} s:\n{self.logs()}")

    def logs(self, tail: int = 20) -> str:
        out = []
        for name in sorted(os.listdir(self.path("log"))):
            with open(self.path("log", name), errors="replace") as f:
                lines = f.read().splitlines()[-tail:]
            out.append(f"--- {name}\n" + "\n".join(lines))
        return "\n".join(out)

    def run(self, *cmd: str, check: bool = True, timeout: float = 30):
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
        return r

    def sbatch(self, *args: str, env: dict | None = None, cwd: str | None = None) -> int:
        """Submits a batch job; its id."""
        cmd = ["sbatch", "--parsable", *args]
        r = subprocess.run(
            cmd, env=env or self.env, capture_output=True, text=True, timeout=30, cwd=cwd
        )
        if r.returncode:
            raise RuntimeError(f"sbatch failed: {r.stderr.strip()}")
        return int(r.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict:
        """`scontrol show job` as a dict (JobState, ExitCode, Restarts, ...)."""
        out = self.run("scontrol", "show", "job", str(job_id), "-o").stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait(self, job_id: int, timeout: float = 300, states=("COMPLETED", "FAILED")) -> dict:
        """Waits until the job reaches a final state (or one of `states`)."""
        final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
        deadline = time.time() + timeout
        while time.time() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in set(states) | final:
                return info
            time.sleep(0.25)
        raise TimeoutError(f"job {job_id} still {self.job(job_id).get('JobState')}")

    def stop(self) -> None:
        """Stops the slurmds (after the queue drains), then slurmctld, then munged, by PID."""
        with _suppress():
            self.run("scancel", "--full", "--user=root", check=False, timeout=10)
        deadline = time.time() + 15
        while time.time() < deadline:
            with _suppress():
                if not self.run("squeue", "-h", check=False, timeout=10).stdout.strip():
                    break
            time.sleep(0.2)
        order = [n for n in self.pids if n.startswith("slurmd")] + ["slurmctld", "munged"]
        for name in order:
            pid = self.pids.get(name)
            if pid and _alive(pid):
                os.kill(pid, signal.SIGTERM)
                _reap(pid, 10)
        shutil.rmtree(self.root, ignore_errors=True)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], subprocess.SubprocessError | OSError)


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        done = pid if not os.path.exists(f"/proc/{pid}") else 0
    return done == 0


def _reap(pid: int, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        _reap(pid, 5)
