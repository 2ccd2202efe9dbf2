"""A cheap HTTP/1.1 load generator and server-process handling for the serving benchmarks.

``drive`` sends one pre-built request back to back over N keep-alive connections (one request in flight
each) for a bounded time and count, and returns requests/s, p50/p99 latency and the CPU the client and the
server spent per request. The client is a bare asyncio Protocol on uvloop (when installed): no HTTP library
in the loop, so its own cost per request (measured against ``echo_server``, a fixed-answer endpoint) stays
far below a Python server's. ``Server`` runs a server as a subprocess in its own process group, times its
cold start to the first ``GET /ping`` 200 and always kills the whole group.

    python benchmarks/httpload.py echo PORT     # the trivial endpoint, on 127.0.0.1
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import Any, Callable

import numpy as np

# ----------------------------------------------------------------------------
# Client: one asyncio Protocol per keep-alive connection
# ----------------------------------------------------------------------------


class _Conn(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends pre-built bytes and waits for the whole answer."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            answer = self._parse()
            if answer is not None:
                self.waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"server closed the connection: {exc}"))

    def _parse(self) -> tuple[int, bytes, bytes] | None:
        """(status, head, body) once a whole answer is buffered (Content-Length or chunked), else None."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buf[:end])
        lower = head.lower()
        start = end + 4
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = lower.find(b"\r\n", at + 2)
            total = start + int(head[at + 17:stop if stop >= 0 else None])
            if len(self.buf) < total:
                return None
            body = bytes(self.buf[start:total])
        elif b"transfer-encoding: chunked" in lower:
            parts, pos = [], start
            while True:
                eol = self.buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                size = int(bytes(self.buf[pos:eol]).split(b";")[0], 16)
                if len(self.buf) < eol + 2 + size + 2:
                    return None
                if size == 0:
                    total = eol + 4  # no trailers
                    break
                parts.append(bytes(self.buf[eol + 2:eol + 2 + size]))
                pos = eol + 2 + size + 2
            body = b"".join(parts)
        else:
            total, body = start, b""
        del self.buf[:total]
        return int(head[9:12]), head, body

    async def request(self, raw: bytes) -> tuple[int, bytes, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


async def _connect(port: int) -> _Conn:
    _, conn = await asyncio.get_running_loop().create_connection(_Conn, "127.0.0.1", port)
    return conn


async def _drive(port: int, raw: bytes, concurrency: int, warmup_s: float, seconds: float, max_requests: int,
                 server_cpu: Callable[[], float] | None) -> dict[str, Any]:
    """Warm up, then measure: each of ``concurrency`` connections sends ``raw`` back to back."""
    loop = asyncio.get_running_loop()
    conns = [await _connect(port) for _ in range(concurrency)]
    latencies: list[int] = []
    statuses: Counter = Counter()
    errors: Counter = Counter()
    phase = {"record": False, "stop": time.perf_counter() + warmup_s, "count": 0}

    async def worker(i: int) -> None:
        clock = time.perf_counter_ns
        while time.perf_counter() < phase["stop"] and phase["count"] < max_requests:
            t = clock()
            try:
                status, _, _ = await conns[i].request(raw)
            except ConnectionError as exc:
                if phase["record"]:
                    errors[type(exc).__name__] += 1
                conns[i].transport.close()
                try:
                    conns[i] = await _connect(port)
                except OSError as exc:
                    errors[f"cannot reconnect: {exc}"] += 1
                    return
                continue
            if phase["record"]:
                latencies.append(clock() - t)
                statuses[status] += 1
                phase["count"] += 1

    async def run_phase(limit_s: float) -> float:
        t0 = time.perf_counter()
        tasks = [loop.create_task(worker(i)) for i in range(concurrency)]
        done, pending = await asyncio.wait(tasks, timeout=limit_s + 30)  # a hung server cannot hold the run
        for task in pending:
            task.cancel()
        if pending:
            errors["unfinished at the deadline"] += len(pending)
        return time.perf_counter() - t0

    try:
        await run_phase(warmup_s)
        phase.update(record=True, stop=time.perf_counter() + seconds)
        cpu0, srv0 = os.times(), server_cpu() if server_cpu else 0.0
        elapsed = await run_phase(seconds)
        cpu1, srv1 = os.times(), server_cpu() if server_cpu else 0.0
    finally:
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
    n = len(latencies)
    ms = np.array(latencies, dtype=np.float64) / 1e6 if n else np.zeros(1)
    ok = statuses.get(200, 0)
    return {
        "requests": n, "ok": ok, "statuses": {str(k): v for k, v in statuses.items()}, "errors": dict(errors),
        "seconds": elapsed, "rps": ok / elapsed, "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "client_cpu_us": 1e6 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / max(n, 1),
        "server_cpu_us": 1e6 * (srv1 - srv0) / max(n, 1) if server_cpu else None,
    }


def _loop_runner() -> Any:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:
        return asyncio.new_event_loop


def drive(port: int, raw: bytes, concurrency: int, *, warmup_s: float, seconds: float, max_requests: int,
          server_cpu: Callable[[], float] | None = None) -> dict[str, Any]:
    """Run ``_drive`` on a fresh event loop (uvloop when installed).

    Args:
        port: the server's port on 127.0.0.1.
        raw: one complete HTTP/1.1 request, sent as is.
        concurrency: connections, each with one request in flight.
        warmup_s: unrecorded seconds first.
        seconds: measured seconds (no new request starts after them).
        max_requests: the measured phase also stops after this many answers.
        server_cpu: returns the server's CPU seconds so far (sampled around the measured phase).

    Returns:
        requests, ok, statuses, errors, seconds, rps, p50_ms, p99_ms, client_cpu_us and server_cpu_us
        (CPU microseconds per request).
    """
    with asyncio.Runner(loop_factory=_loop_runner()) as runner:
        return runner.run(_drive(port, raw, concurrency, warmup_s, seconds, max_requests, server_cpu))


def request_once(port: int, raw: bytes, timeout_s: float = 60.0) -> tuple[int, bytes, bytes]:
    """One request on its own connection: (status, head, body)."""
    async def once() -> tuple[int, bytes, bytes]:
        conn = await _connect(port)
        try:
            return await asyncio.wait_for(conn.request(raw), timeout_s)
        finally:
            conn.transport.close()

    with asyncio.Runner(loop_factory=_loop_runner()) as runner:
        return runner.run(once())


# ----------------------------------------------------------------------------
# Servers: subprocesses in their own process group, always killed
# ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int) -> int | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
            s.settimeout(2)
            data = s.recv(64)
        return int(data[9:12]) if data.startswith(b"HTTP/1.") else None
    except (OSError, ValueError):
        return None


class Server:
    """A server subprocess: started in its own session, cold start timed to the first /ping 200, killed on exit."""

    def __init__(self, name: str, cmd: list[str], port: int, log: Path, *, timeout_s: float,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.cmd, self.port, self.log, self.timeout_s, self.env = name, cmd, port, log, timeout_s, env
        self.proc: subprocess.Popen | None = None
        self.cold_start_s: float | None = None

    def __enter__(self) -> "Server":
        with open(self.log, "wb") as log:
            start = time.perf_counter()
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True, env=self.env)
        try:
            while _ping(self.port) != 200:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with code {self.proc.returncode} before /ping "
                                       f"answered 200; its log ({self.log}) ends:\n{self.log_tail()}")
                if time.perf_counter() - start > self.timeout_s:
                    raise RuntimeError(f"{self.name}: /ping did not answer 200 within {self.timeout_s:g} s; its "
                                       f"log ends:\n{self.log_tail()}")
                time.sleep(0.005)
            self.cold_start_s = time.perf_counter() - start
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM the process group (SIGKILL after 15 s), then SIGKILL whatever of the group is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        # Children (mlflow's uvicorn) may outlive the CLI process that started them.
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def cpu_and_rss(self) -> tuple[float, int]:
        """CPU seconds (user + system) and RSS bytes of the server and its children."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0, 0
        cpu, rss = 0.0, 0
        for p in procs:
            try:
                t = p.cpu_times()
                cpu += t.user + t.system
                rss += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return cpu, rss


def console_script(name: str) -> str:
    """The console script installed beside this interpreter (not a pyenv shim, which adds its own start-up)."""
    import shutil

    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def echo_server(port: int) -> None:
    """A trivial HTTP/1.1 endpoint (fixed 200 answer, no app): what the load generator manages at most."""
    answer = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport, self.buf = transport, bytearray()

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while (end := self.buf.find(b"\r\n\r\n")) >= 0:
                lower = bytes(self.buf[:end]).lower()
                at = lower.find(b"content-length:")
                size = int(lower[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
                if len(self.buf) < end + 4 + size:
                    return
                del self.buf[:end + 4 + size]
                self.transport.write(answer)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port)
        await server.serve_forever()

    with asyncio.Runner(loop_factory=_loop_runner()) as runner:
        runner.run(main())


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "echo" or not sys.argv[2].isdigit():
        sys.exit("usage: python benchmarks/httpload.py echo PORT")
    echo_server(int(sys.argv[2]))
