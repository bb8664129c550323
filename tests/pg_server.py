"""A throwaway PostgreSQL server on loopback, with its own data directory and port.

Used by the tests (the ``postgres_url`` fixture) and by hand:

    python -m tests.pg_server start     # prints the URL and the data directory
    python -m tests.pg_server stop DIR

Needs the server binaries (Debian: ``apt-get install postgresql``; .ci/run installs them when
missing). As root, the server runs as the ``postgres`` user, since PostgreSQL refuses root.
"""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import List, Optional

DATABASE = "sweeps"
USER = "postgres"


class ServerUnavailable(RuntimeError):
    pass


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise ServerUnavailable(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return found


def _as_server_user(cmd: List[str]) -> List[str]:
    return ["runuser", "-u", USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: List[str], timeout: float = 60) -> None:
    proc = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise ServerUnavailable(f"{' '.join(cmd[:2])} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    data_dir: str
    port: int

    def url(self, password: Optional[str] = None) -> str:
        auth = f"{USER}:{password}" if password else USER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> None:
        _run([_binary("pg_ctl"), "-D", self.data_dir, "-l", os.path.join(self.data_dir, "server.log"), "-w", "-t", "30",
              "-o", f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])

    def stop(self) -> None:
        _run([_binary("pg_ctl"), "-D", self.data_dir, "-m", "fast", "-w", "stop"])

    def remove(self) -> None:
        try:
            self.stop()
        except ServerUnavailable:
            pass
        shutil.rmtree(self.data_dir, ignore_errors=True)


def start() -> Server:
    """initdb a fresh cluster in a new folder, start it on a free loopback port, create the database."""
    data_dir = tempfile.mkdtemp(prefix="mnist-sweep-pg-")
    if os.geteuid() == 0:
        shutil.chown(data_dir, USER, USER)
    server = Server(data_dir, free_port())
    try:
        _run([_binary("initdb"), "-D", data_dir, "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"], timeout=120)
        server.start()
        _run([_binary("createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U", USER, DATABASE])
    except Exception:
        server.remove()
        raise
    return server


if __name__ == "__main__":
    if sys.argv[1:2] == ["start"]:
        s = start()
        print(f"{s.url()}\n{s.data_dir}")
    elif sys.argv[1:2] == ["stop"] and len(sys.argv) == 3:
        Server(sys.argv[2], 0).remove()
    else:
        sys.exit("usage: python -m tests.pg_server start | stop DATA_DIR")
