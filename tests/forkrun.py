"""`python -m module args` without paying for jax's import each time.

One server process per test worker imports jax, flax and optax once (about 3 s of every
command's start-up on 2 cores), then forks a child per command. The child is the command as a
fresh process would run it: its own argv, environment, working directory, stdin from /dev/null,
stdout and stderr to files, `runpy` as `python -m` does it, and the interpreter's exit
(non-daemon threads joined, atexit handlers run, output flushed; not its teardown of every
module). Nothing of the command is imported before the fork, and no jax backend is started, so
XLA_FLAGS (read when the backend starts) still apply. The variables that jax reads when it is
imported (JAX_*) get a server of their own for each set of values. One variable is added where
it is not set: TPU_SKIP_MDS_QUERY=1. With libtpu installed, jax asks the cloud metadata server
about the TPU VM it might be on; in a fresh process on any other host that fails at once, but in
a forked child it hangs (found when a child started a backend with it unset).
"""

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

SERVER = r"""
import atexit, importlib.util, json, os, runpy, sys, threading, traceback
import flax.linen, jax, ml_collections, numpy, optax
from absl import app, flags
sys.stdout.write(json.dumps({"ready": True}) + "\n"); sys.stdout.flush()
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(job["out"], os.O_WRONLY | os.O_TRUNC)
        err = os.open(job["err"], os.O_WRONLY | os.O_TRUNC)
        os.dup2(null, 0); os.dup2(out, 1); os.dup2(err, 2)
        sys.stdin = open(os.devnull)
        os.chdir(job["cwd"])
        os.environ.clear(); os.environ.update(job["env"])
        os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
        sys.argv = [job["module"], *job["args"]]
        sys.path[0] = job["cwd"]
        code = 0
        try:
            if importlib.util.find_spec(job["module"]) is None:
                raise ModuleNotFoundError
            runpy.run_module(job["module"], run_name="__main__", alter_sys=True)
        except SystemExit as e:
            code = e.code
        except ModuleNotFoundError as e:
            if e.name not in (None, job["module"]):  # an import inside the command
                traceback.print_exc()
            else:
                sys.stderr.write(f"{sys.executable}: No module named {job['module']}\n")
            code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        if code is not None and not isinstance(code, int):
            sys.stderr.write(f"{code}\n")
            code = 1
        # What the interpreter's exit does that a command may rely on (non-daemon threads
        # joined, atexit handlers, flushes), without its slow teardown of every module.
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code or 0)
    sys.stdout.write(json.dumps({"pid": pid}) + "\n"); sys.stdout.flush()
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n")
    sys.stdout.flush()
"""

_servers: dict[tuple, subprocess.Popen] = {}  # by the JAX_* variables they were started with
_pending: dict[int, bytes] = {}  # by server pid: what was read past the last whole line


def _jax_vars(environ) -> tuple:
    return tuple(sorted((k, v) for k, v in environ.items() if k.startswith("JAX_")))


def _start(cwd: str, env: dict[str, str]) -> subprocess.Popen:
    key = _jax_vars(env)
    server = _servers.get(key)
    if server is None or server.poll() is not None:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        _pending[server.pid] = b""
        if _read(server, 120) != {"ready": True}:
            raise RuntimeError("the fork server did not start")
        _servers[key] = server
    return server


def stop() -> None:
    """Ends the servers (at the end of the session)."""
    for server in _servers.values():
        if server.poll() is None:
            server.stdin.close()
            server.wait(timeout=30)
    _servers.clear()


def _read(server: subprocess.Popen, timeout: float) -> dict | None:
    """The server's next line (JSON), or None after `timeout` seconds. Unbuffered: a line read
    ahead into a buffer would be invisible to `select`."""
    fd, deadline = server.stdout.fileno(), time.monotonic() + timeout
    while b"\n" not in _pending[server.pid]:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            raise RuntimeError(f"the fork server ended (exit status {server.wait()})")
        _pending[server.pid] += chunk
    line, _, _pending[server.pid] = _pending[server.pid].partition(b"\n")
    return json.loads(line)


def run(module: str, args: list[str], *, cwd: str, env: dict[str, str], timeout: float):
    """Runs `python -m module *args` in `cwd` with `env`; returns a CompletedProcess with text
    stdout and stderr, as `subprocess.run(..., capture_output=True, text=True)` would. Raises
    subprocess.TimeoutExpired after `timeout` seconds (the command is killed)."""
    cmd = [sys.executable, "-m", module, *args]
    if not hasattr(os, "fork"):
        kwargs = dict(cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        return subprocess.run(cmd, **kwargs)
    server = _start(cwd, env)
    with tempfile.TemporaryDirectory() as d:
        out, err = os.path.join(d, "out"), os.path.join(d, "err")
        for path in (out, err):
            open(path, "w").close()
        job = dict(module=module, args=list(args), cwd=cwd, env=dict(env), out=out, err=err)
        server.stdin.write((json.dumps(job) + "\n").encode())
        server.stdin.flush()
        pid = _read(server, 60)["pid"]
        done = _read(server, timeout)
        if done is None:
            os.killpg(pid, signal.SIGKILL)
            _read(server, 60)
            raise subprocess.TimeoutExpired(cmd, timeout)
        with open(out, errors="replace") as f_out, open(err, errors="replace") as f_err:
            return subprocess.CompletedProcess(cmd, done["rc"], f_out.read(), f_err.read())
