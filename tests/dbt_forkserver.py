"""A launcher of `dbt` commands for the test suite: one process imports dbt once and forks a child per command.

    python tests/dbt_forkserver.py SOCKET_PATH      # prints "ready" once it listens

Each child is a new process that runs dbt's own command line (`dbt.cli.main:cli`, what the `dbt`
script calls) in the caller's directory, with the caller's environment and arguments, writing to the
caller's file descriptors, and exits through the interpreter's normal shutdown as the `dbt` script
does. What the children share is Python's start-up and dbt's imports, about 1.4 s of CPU a command
and most of what the suite spends. Nothing of a command outlives it: the server opens no database,
imports neither this package nor the SDK, and starts no thread.

Protocol, one connection a command: the caller sends one JSON line {"args", "cwd", "env"} with two
file descriptors (stdout, stderr); the server answers the child's pid, then its exit code (negative:
the signal that ended it), one line each.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys


def serve(path: str) -> dict | None:
    """Serve until stdin closes (the server's parent is gone); in a forked child, return its command."""
    import dbt.adapters.duckdb  # noqa: F401  the imports every command would pay
    import dbt.cli.main  # noqa: F401

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


if __name__ == "__main__":
    job = serve(sys.argv[1])
    if job is not None:
        run_dbt(job)
