"""A launcher of `dbt` commands for the test suite: one process imports dbt once and forks a child per command.

    server = ForkServer()                           # runs this file: python tests/dbt_forkserver.py SOCKET_PATH
    server.run(["dbt", "run"], cwd, env, timeout=600)   # like subprocess.run(..., capture_output=True, text=True)
    proc = server.popen(["dbt", "run"], cwd, env)   # like subprocess.Popen(..., stdout=PIPE, stderr=STDOUT, text=True)

Each child is a new process that runs dbt's own command line (`dbt.cli.main:cli`, what the `dbt`
script calls) in the caller's directory, with the caller's environment and arguments, writing to the
caller's file descriptors, and exits through the interpreter's normal shutdown as the `dbt` script
does. What the children share is Python's start-up and the imports of dbt and of the third-party
libraries this package loads (the anthropic SDK alone is ~1.1 s on a 2-core machine), about 2 s of CPU a command and most
of what the suite spends. Importing holds no state a command could leak into the next: the SDK reads
its key and base URL when a client is built, in the child. Nothing of a command outlives it: the
server opens no database, builds no client, does not import this package (each command imports it
afresh, as a `dbt` process would), and starts no thread.

Protocol, one connection a command: the caller sends one JSON line {"args", "cwd", "env"} with two
file descriptors (stdout, stderr); the server answers the child's pid, then its exit code (negative:
the signal that ended it), one line each.
"""

from __future__ import annotations

import json
import os
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def serve(path: str) -> dict | None:
    """Serve until stdin closes (the server's parent is gone); in a forked child, return its command."""
    import anthropic  # noqa: F401  the imports every command would pay
    import dbt.adapters.duckdb  # noqa: F401
    import dbt.cli.main  # noqa: F401
    import pyarrow  # noqa: F401
    import pypdf  # noqa: F401

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "reap")
    selector.register(sys.stdin, selectors.EVENT_READ, "stdin")
    waiting: dict[int, socket.socket] = {}
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.data == "stdin":
                if not sys.stdin.readline():
                    return None
            elif key.data == "reap":
                os.read(wake_r, 4096)
                _reap(waiting)
            else:
                conn, _ = listener.accept()
                try:
                    command, fds = _receive(conn)
                except (OSError, ValueError):
                    conn.close()
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    # A user's dbt takes Ctrl-C; a suite started in the background inherits SIGINT ignored.
                    signal.signal(signal.SIGINT, signal.default_int_handler)
                    for fd in (wake_r, wake_w):
                        os.close(fd)
                    for other in (listener, conn, *waiting.values()):
                        other.close()
                    selector.close()
                    command["fds"] = fds
                    return command
                for fd in fds:
                    os.close(fd)
                conn.sendall(f"{pid}\n".encode())
                waiting[pid] = conn
                _reap(waiting)  # a child may have ended before it was in `waiting`


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 2)
    while not data.endswith(b"\n"):
        more = conn.recv(1 << 20)
        if not more:
            raise ConnectionError("the caller hung up mid-command")
        data += more
    return json.loads(data), list(fds)


def _reap(waiting: dict[int, socket.socket]) -> None:
    for pid in list(waiting):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            conn = waiting.pop(pid)
            try:
                conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            except OSError:
                pass  # the caller gave up waiting
            conn.close()


def run_dbt(command: dict) -> None:
    """In the forked child: become the caller's `dbt` process and run its command, as the `dbt` script does."""
    out, err = command["fds"]
    null = os.open(os.devnull, os.O_RDONLY)
    for fd, target in ((null, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(command["cwd"])
    os.environ.clear()
    os.environ.update(command["env"])
    sys.argv = ["dbt", *command["args"]]
    from dbt.cli.main import cli

    sys.exit(cli())


class ForkServer:
    """Runs `dbt` commands as forks of one process that has imported dbt (tests/dbt_forkserver.py).

    Each command is still its own process running dbt's own command line, with its own pid, exit code,
    output and DuckDB connection; only Python's start-up and dbt's imports are paid once. Stopped by
    pid (and it exits by itself when this process does: it watches its stdin).
    """

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="cb-dbt-")
        self.path = os.path.join(self._dir, "dbt.sock")
        self._proc = subprocess.Popen([sys.executable, __file__, self.path],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self._proc.stdout.readline().strip()
        if ready != "ready":
            self.stop()
            raise RuntimeError(f"the dbt fork server did not start (it said {ready!r})")

    def start(self, command: list[str], cwd: Path, env: dict[str, str], out: int, err: int) -> "ForkedDbt":
        return ForkedDbt(self.path, command, cwd, env, out, err)

    def run(self, command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        """Like `subprocess.run(..., capture_output=True, text=True, timeout=timeout)`."""
        with tempfile.TemporaryFile(dir=cwd) as out, tempfile.TemporaryFile(dir=cwd) as err:
            proc = self.start(command, cwd, env, out.fileno(), err.fileno())
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(command, code, out.read().decode(), err.read().decode())

    def popen(self, command: list[str], cwd: Path, env: dict[str, str]) -> "ForkedDbt":
        read, write = os.pipe()
        try:
            proc = self.start(command, cwd, env, write, write)
        finally:
            os.close(write)
        proc.stdout = open(read, encoding="utf-8")
        return proc

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc.stdout.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class ForkedDbt:
    """A dbt command started by a `ForkServer`, with the parts of `subprocess.Popen` the tests use."""

    def __init__(self, path: str, command: list[str], cwd: Path, env: dict[str, str], out: int, err: int):
        self.args = command
        self.stdout = None
        self.returncode: int | None = None
        self._buffer = b""
        self._reader: threading.Thread | None = None
        self._output: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        request = {"args": command[1:], "cwd": str(cwd), "env": env}
        socket.send_fds(self._sock, [json.dumps(request).encode() + b"\n"], [out, err])
        self.pid = int(self._line(None))

    def _line(self, timeout: float | None) -> str | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._sock], [], [], left)[0]:
                return None
            chunk = self._sock.recv(4096)
            if not chunk:
                raise RuntimeError("the dbt fork server went away")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def poll(self) -> int | None:
        if self.returncode is None:
            line = self._line(0)
            if line is not None:
                self.returncode = int(line)
                self._sock.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            line = self._line(timeout)
            if line is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = int(line)
            self._sock.close()
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, None]:
        if self._reader is None:
            self._reader = threading.Thread(target=lambda: self._output.append(self.stdout.read()), daemon=True)
            self._reader.start()
        self._reader.join(timeout)
        if self._reader.is_alive():
            raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait()
        self.stdout.close()
        return "".join(self._output), None


if __name__ == "__main__":
    job = serve(sys.argv[1])
    if job is not None:
        run_dbt(job)
