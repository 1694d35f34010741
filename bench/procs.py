"""Process and HTTP helpers of the benchmarks: start servers, stop them by PID, read their CPU and memory."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

TCK = os.sysconf("SC_CLK_TCK")


def start(procs, cmd, log, env=None):
    """Start a server in its own session (a terminal's Ctrl-C reaches only us); remember its PID."""
    procs.append(subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env, start_new_session=True))
    return procs[-1]


def stop(p, timeout=30.0):
    """SIGTERM by PID, SIGKILL after `timeout`, then the same for any child it left; returns its exit code."""
    try:
        kids = psutil.Process(p.pid).children(recursive=True) if p.poll() is None else []
    except psutil.NoSuchProcess:
        kids = []
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for k in kids:
        try:
            k.terminate()
            k.wait(5)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            k.kill()
    return p.returncode


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ticks(pid):
    """CPU ticks (user+system, all threads, plus reaped children) of a process and its live descendants."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0.0
    for p in tree:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return round(total * TCK)


def status_mb(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024, 1)


def http(method, url, body=None, headers=None, timeout=10):
    """(status, headers, body bytes); HTTP errors are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def wait_ready(proc, url, headers, log_path, limit_s=60):
    """Seconds until `url` answers 200; exits (the caller's finally stops the servers) if it never does."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s and proc.poll() is None:
        try:
            if http("GET", url, headers=headers, timeout=2)[0] == 200:
                return round(time.monotonic() - t0, 2)
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"{url} not ready (exit code {proc.poll()}); log:\n{Path(log_path).read_text()[-3000:]}")
