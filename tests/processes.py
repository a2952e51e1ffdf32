"""Servers the tests start as processes (each in its own process group) and stop by PID or group: free loopback
ports, waiting for a line, the process tree, a one-shot HTTP request and raw bytes on a socket."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OVXAI = [sys.executable, "-m", "ovxai.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """A child's environment: the repository importable, no inherited Ray cluster address, Ray's token
    authentication with a fresh token (nothing written to ~/.ray), no usage reporting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env | extra


class Lines:
    """A process's stdout, read on a thread, searchable while it runs."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")), daemon=True).start()

    def wait_for(self, text: str, seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            hit = next((line for line in self.lines if text in line), None)
            if hit:
                return hit
            if self.proc.poll() is not None:
                time.sleep(0.2)  # the last lines
                hit = next((line for line in self.lines if text in line), None)
                if hit:
                    return hit
                break
            time.sleep(0.05)
        raise AssertionError(f"no '{text}' within {seconds} s; output: {''.join(self.lines)[-3000:]}")


def start(argv: list[str], **extra_env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env(**extra_env),
        start_new_session=True,
    )  # fmt: skip


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (whatever session or group it put itself in)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.add(pid)
    return living


def stop(procs: list[subprocess.Popen[str]], others: set[int] = frozenset(), grace: float = 10) -> None:  # type: ignore[assignment]
    """SIGTERM each process group we started, SIGKILL what is left after ``grace`` s (and ``others``, by PID)."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (any(p.poll() is None for p in procs) or alive(set(others))):
        time.sleep(0.1)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    for pid in alive(set(others)):
        os.kill(pid, signal.SIGKILL)


def request(
    url: str, data: bytes | None = None, method: str | None = None, timeout: float = 30
) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def raw(port: int, data: bytes, timeout: float = 30) -> tuple[int, bytes]:
    """Send bytes as they are on a fresh connection; (status, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
            head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
            sizes = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
            if sizes and len(body) >= int(sizes[0]):
                break
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head, "the connection was dropped without an answer"
    return int(head.split()[1]), body


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the processes listen on (from /proc: their fds' inodes)."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and parts[9] in inodes:  # 0A: LISTEN
                    address, port = parts[1].split(":")
                    found.add((_address(address, width), int(port, 16)))
    return found


def _address(hexed: str, width: int) -> str:
    import ipaddress

    raw_bytes = bytes.fromhex(hexed)
    if width == 8:
        return str(ipaddress.IPv4Address(raw_bytes[::-1]))
    words = b"".join(raw_bytes[i : i + 4][::-1] for i in range(0, 16, 4))
    address = ipaddress.IPv6Address(words)
    return str(address.ipv4_mapped or address)  # ::ffff:127.0.0.1 listens on 127.0.0.1 only


RAY_NODE_IP = "127.0.0.2"  # loopback: Ray turns 127.0.0.1 into the machine's network address


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One local Ray instance for a module, on loopback, stopped at the end (test_collection.py's --address
    tests join it)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address=RAY_NODE_IP, log_to_driver=False)
    try:
        yield
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
