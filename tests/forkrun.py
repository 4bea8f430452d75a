"""`python -m module args` without paying for jax's import each time.

One server process per test worker imports jax, flax and optax once (about 3 s of every
command's start-up on 2 cores), then forks a child per command. The child is the command as a
fresh process would run it: its own argv, environment, working directory, stdin from /dev/null,
stdout and stderr to files, `runpy` as `python -m` does it, and the interpreter's exit
(non-daemon threads joined, atexit handlers run, output flushed; not its teardown of every
module). Nothing of the command is imported before the fork, and no jax backend is started, so
XLA_FLAGS (read when the backend starts) still apply. An environment that differs from the
server's in a variable read when jax is imported (JAX_*) goes to a real subprocess instead.
"""

import json
import os
import select
import signal
import subprocess
import sys
import tempfile

SERVER = r"""
import atexit, importlib.util, json, os, runpy, sys, threading, traceback
import flax.linen, jax, ml_collections, numpy, optax
from absl import app, flags
sys.stdout.write("ready\n"); sys.stdout.flush()
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
        sys.argv = [job["module"], *job["args"]]
        sys.path[0] = job["cwd"]
        code = 0
        try:
            if importlib.util.find_spec(job["module"]) is None:
                raise ModuleNotFoundError
        except ModuleNotFoundError:
            sys.stderr.write(f"{sys.executable}: No module named {job['module']}\n")
            sys.exit(1)
        try:
            runpy.run_module(job["module"], run_name="__main__", alter_sys=True)
        except SystemExit as e:
            code = e.code
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

_server: subprocess.Popen | None = None


def _start(cwd: str) -> subprocess.Popen:
    global _server
    if _server is None or _server.poll() is not None:
        _server = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if _server.stdout.readline().strip() != "ready":
            raise RuntimeError("the fork server did not start")
    return _server


def stop() -> None:
    """Ends the server (at the end of the session)."""
    global _server
    if _server is not None and _server.poll() is None:
        _server.stdin.close()
        _server.wait(timeout=30)
    _server = None


def _read(server: subprocess.Popen, timeout: float) -> dict | None:
    ready, _, _ = select.select([server.stdout], [], [], timeout)
    return json.loads(server.stdout.readline()) if ready else None


def run(module: str, args: list[str], *, cwd: str, env: dict[str, str], timeout: float):
    """Runs `python -m module *args` in `cwd` with `env`; returns a CompletedProcess with text
    stdout and stderr, as `subprocess.run(..., capture_output=True, text=True)` would. Raises
    subprocess.TimeoutExpired after `timeout` seconds (the command is killed)."""
    cmd = [sys.executable, "-m", module, *args]

    def jax_vars(environ) -> dict[str, str]:
        return {k: v for k, v in environ.items() if k.startswith("JAX_")}

    if not hasattr(os, "fork") or jax_vars(env) != jax_vars(os.environ):
        return subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    server = _start(cwd)
    with tempfile.TemporaryDirectory() as d:
        out, err = os.path.join(d, "out"), os.path.join(d, "err")
        for path in (out, err):
            open(path, "w").close()
        job = dict(module=module, args=list(args), cwd=cwd, env=dict(env), out=out, err=err)
        server.stdin.write(json.dumps(job) + "\n")
        server.stdin.flush()
        pid = _read(server, 60)["pid"]
        done = _read(server, timeout)
        if done is None:
            os.killpg(pid, signal.SIGKILL)
            _read(server, 60)
            raise subprocess.TimeoutExpired(cmd, timeout)
        with open(out, errors="replace") as f_out, open(err, errors="replace") as f_err:
            return subprocess.CompletedProcess(cmd, done["rc"], f_out.read(), f_err.read())
