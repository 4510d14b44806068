"""Shared machinery of the benchmark suite: scratch filesystem, timed child processes, data, peersync peers.

Every child process is started in its own session and remembered in ``PROCS``;
``cleanup()`` ends those (and only those) and unmounts the scratch filesystem.
Peak RSS of a one-shot command comes from ``/usr/bin/time -f %M`` (the
largest resident set of the command and its waited-for children); of a
long-running daemon from psutil polling (see ``RssSampler``).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TIME_BIN = "/usr/bin/time"
PROCS: list[subprocess.Popen[Any]] = []  # every long-running child we started, to end on exit


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- child processes ---------------------------------------------------------------


@dataclasses.dataclass
class Run:
    seconds: float
    rss_kib: int  # 0 when unknown
    rc: int
    out: str
    err: str


class BenchError(RuntimeError):
    pass


def run(cmd: Sequence[str | os.PathLike[str]], *, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 600, check: bool = True, measure_rss: bool = True) -> Run:
    """Run ``cmd`` to completion, timing it by wall clock; kill its whole session on timeout."""
    args = [str(c) for c in cmd]
    rss_file = None
    if measure_rss and os.path.exists(TIME_BIN):
        fd, rss_file = tempfile.mkstemp(prefix="bench-rss-")
        os.close(fd)
        args = [TIME_BIN, "-f", "%M", "-o", rss_file, *args]
    t0 = time.perf_counter()
    p = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         errors="replace", start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(p)
        out, err = p.communicate()
        raise BenchError(f"timed out after {timeout:.0f} s: {' '.join(args[-6:])}") from None
    seconds = time.perf_counter() - t0
    rss = 0
    if rss_file:
        try:
            text = Path(rss_file).read_text().strip().splitlines()
            rss = int(text[-1]) if text and text[-1].isdigit() else 0
        except (OSError, ValueError):
            rss = 0
        os.unlink(rss_file)
    if check and p.returncode != 0:
        raise BenchError(f"exit {p.returncode}: {' '.join(args)}\n{err[-2000:]}")
    return Run(seconds, rss, p.returncode, out, err)


def start(cmd: Sequence[str | os.PathLike[str]], *, env: dict[str, str] | None = None, log_path: Path | None = None,
          cwd: Path | None = None) -> subprocess.Popen[Any]:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    p = subprocess.Popen([str(c) for c in cmd], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True)
    PROCS.append(p)
    return p


def _kill_group(p: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)  # its own session: only what we started
    except (ProcessLookupError, PermissionError):
        pass


def stop(p: subprocess.Popen[Any], sig: int = signal.SIGTERM, grace: float = 20) -> None:
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _kill_group(p)
            p.wait(timeout=10)
        except ProcessLookupError:
            pass
    if p in PROCS:
        PROCS.remove(p)


def wait_for(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``pred`` until true; return the seconds it took; raise after ``timeout``."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    last: Exception | None = None
    while True:
        try:
            if pred():
                return time.perf_counter() - t0
        except Exception as exc:  # a daemon not answering yet
            last = exc
        else:
            last = None
        if time.perf_counter() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}" + (f" ({last})" if last else ""))
        time.sleep(interval)


class RssSampler:
    """Peak RSS of some processes and their children, polled with psutil in a thread."""

    def __init__(self, pids: Sequence[int], interval: float = 0.1) -> None:
        import psutil

        self._psutil = psutil
        self.pids = list(pids)
        self.peak: dict[int, int] = {pid: 0 for pid in pids}  # bytes
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _tree_rss(self, pid: int) -> int:
        try:
            proc = self._psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
        except self._psutil.Error:
            return 0
        total = 0
        for q in procs:
            try:
                total += q.memory_info().rss
            except self._psutil.Error:
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], self._tree_rss(pid))
            self._stop.wait(self.interval)

    def reset(self) -> None:
        for pid in self.pids:
            self.peak[pid] = 0

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drop_dirty() -> None:
    """Write back everything dirty before a timed run, so no run pays for an earlier one's writes."""
    os.sync()


def syncfs(path: Path) -> float:
    """``sync -f``: flush the filesystem holding ``path``; returns the seconds it took."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        if hasattr(os, "syncfs"):
            os.syncfs(fd)
        else:
            subprocess.run(["sync", "-f", str(path)], check=True, timeout=600)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


# -- scratch filesystem ------------------------------------------------------------


class Scratch:
    """A fresh ext4 filesystem in a loop-mounted image (root), else a temporary folder."""

    def __init__(self, given: str | None, size_gib: int) -> None:
        self.given = given
        self.size_gib = size_gib
        self.kind = ""
        self.image: Path | None = None
        self.mount: Path | None = None
        self.holder: Path | None = None
        self.path: Path = Path()

    def __enter__(self) -> Scratch:
        if self.given:
            self.path = Path(self.given).absolute()
            self.path.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix="peersync-bench-", dir=self.path))
            self.kind = f"given folder {self.given} ({fs_type(self.path)}; not a fresh filesystem)"
            return self
        problem = ""
        if os.geteuid() == 0 and shutil.which("mkfs.ext4") and os.path.exists("/dev/loop-control"):
            self.holder = Path(tempfile.mkdtemp(prefix="peersync-bench-img-", dir="/var/tmp"))
            self.image = self.holder / "scratch.img"
            self.mount = self.holder / "mnt"
            self.mount.mkdir()
            try:
                subprocess.run(["truncate", "-s", f"{self.size_gib}G", str(self.image)], check=True, timeout=60)
                subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True, timeout=300,
                               capture_output=True)
                subprocess.run(["mount", "-o", "loop", str(self.image), str(self.mount)], check=True, timeout=60,
                               capture_output=True)
                self.path = self.mount
                backing = fs_type(self.holder).split(" on ")[0]  # the type, not this machine's device
                self.kind = (f"fresh ext4 in a {self.size_gib} GiB loop-mounted sparse image "
                             f"(image on {backing}, in a new folder under /var/tmp)")
                log(f"scratch: {self.kind}")
                return self
            except (subprocess.SubprocessError, OSError) as exc:
                problem = f"loop mount failed ({exc})"
                self._teardown_image()
        else:
            problem = "not root or no loop devices"
        self.holder = Path(tempfile.mkdtemp(prefix="peersync-bench-"))
        self.path = self.holder
        self.kind = (f"FALLBACK: temporary folder {self.path} on the root filesystem ({fs_type(self.path)}), "
                     f"{problem}: file creation may be slowed by earlier large deletes")
        log(f"scratch: {self.kind}")
        return self

    def _teardown_image(self) -> None:
        if self.mount and os.path.ismount(self.mount):
            for _ in range(10):
                r = subprocess.run(["umount", str(self.mount)], capture_output=True, timeout=120)
                if r.returncode == 0:
                    break
                time.sleep(1)
        if self.holder:
            shutil.rmtree(self.holder, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        cleanup_procs()
        if self.image:
            self._teardown_image()
        elif self.given:
            shutil.rmtree(self.path, ignore_errors=True)
        elif self.holder:
            shutil.rmtree(self.holder, ignore_errors=True)

    def sub(self, name: str) -> Path:
        p = self.path / name
        if p.exists():
            rmtree(p)
        p.mkdir(parents=True)
        return p


def rmtree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)


def cleanup_procs() -> None:
    for p in list(PROCS):
        stop(p, grace=10)


def fs_type(path: Path) -> str:
    try:
        r = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, timeout=30)
        line = r.stdout.strip().splitlines()[-1].split()
        return f"{line[1]} on {line[0]}"
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


# -- facts ---------------------------------------------------------------------------


def machine_facts(scratch: Scratch) -> dict[str, str]:
    facts: dict[str, str] = {}
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts["cores"] = f"{os.cpu_count()} ({model})" if model else str(os.cpu_count())
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        facts["RAM"] = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    facts["kernel"] = platform.release()
    try:
        osr = Path("/etc/os-release").read_text()
        facts["OS"] = re.search(r'PRETTY_NAME="([^"]+)"', osr).group(1)  # type: ignore[union-attr]
    except (OSError, AttributeError):
        pass
    facts["python"] = platform.python_version()
    facts["filesystem"] = scratch.kind
    facts["page cache"] = "warm (data generated just before; no cache drop), dirty pages flushed before each timed run"
    return facts


def tool_versions() -> dict[str, str]:
    def first(cmd: list[str], pattern: str = "") -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return "absent"
        text = (r.stdout + r.stderr).strip()
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if pattern:
            lines = [ln for ln in lines if re.search(pattern, ln)] or lines
        return lines[0].strip() if lines else "?"

    rev = first(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "peersync"], capture_output=True,
                           text=True, timeout=30).stdout.strip()
    import peersync

    return {
        "peersync": f"{peersync.__version__} (git {rev}{', with uncommitted changes in peersync/' if dirty else ''}), "
                    f"CPython {platform.python_version()}",
        "syncthing": first(["syncthing", "--version"]),
        "unison": first(["unison", "-version"]),
        "rclone": first(["rclone", "version"]),
        "rsync": first(["rsync", "--version"]),
        "cp": first(["cp", "--version"]),
        "find": first(["find", "--version"]),
        "sha256sum": first(["sha256sum", "--version"]),
        "b3sum": first(["b3sum", "--version"]),
        "zstd": first(["zstd", "--version"]),
    }


def ensure_tools(names: Sequence[str]) -> list[str]:
    """Install missing Debian packages (root only); return the names still missing."""
    missing = [n for n in names if not shutil.which(n)]
    pkgs = {"time": "time"}
    if not os.path.exists(TIME_BIN):
        missing.append("time")
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"installing {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", *[pkgs.get(m, m) for m in missing]], env=env,
                       capture_output=True, timeout=900)
    return [n for n in names if not shutil.which(n)] + ([] if os.path.exists(TIME_BIN) else ["time"])


# -- data ----------------------------------------------------------------------------


def make_small_files(root: Path, count: int, size: int, folders: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    per = -(-count // folders)
    n = 0
    for d in range(folders):
        folder = root / f"dir{d:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per):
            if n >= count:
                return
            (folder / f"file{i:05d}.bin").write_bytes(rng.randbytes(size))
            n += 1


def text_pool(size: int = 16 << 20, seed: int = 7) -> bytes:
    """Compressible English-like text, larger than zstd -3's window so slices of it do not repeat inside one."""
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [12, 9, 8, 7.5, 7, 6.7, 6.3, 6, 5.9, 4.3, 4, 2.8, 2.8, 2.4, 2.4, 2.2, 2, 2, 1.9, 1.5, 1, .8, .2, .2,
               .1, .1]
    vocab = ["".join(rng.choices(letters, weights, k=rng.randint(2, 10))) for _ in range(8000)]
    zipf = [1 / (i + 1) for i in range(len(vocab))]
    out: list[str] = []
    total = 0
    while total < size:
        words = rng.choices(vocab, zipf, k=12)
        line = f"{rng.randint(1, 99999)} " + " ".join(words) + ".\n"
        out.append(line)
        total += len(line)
    return "".join(out).encode()[:size]


def write_mixed(path: Path, size: int, text: bool, pool: bytes, seed: int) -> None:
    """``size`` bytes of text (random slices of ``pool``) or of random bytes."""
    rng = random.Random(seed)
    block = 1 << 20
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(block, left)
            if text:
                off = rng.randrange(0, len(pool) - n)
                f.write(pool[off:off + n])
            else:
                f.write(rng.randbytes(n))
            left -= n


def tree_stats(root: Path, skip: tuple[str, ...] = ()) -> tuple[int, int]:
    """(files, bytes) under ``root``, skipping top-level names in ``skip`` and any tool metadata."""
    files = total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for fn in filenames:
            if Path(dirpath) == root and fn in skip:
                continue
            files += 1
            total += os.lstat(os.path.join(dirpath, fn)).st_size
    return files, total


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


# -- peersync peers --------------------------------------------------------------------


def compile_peersync() -> None:
    """Byte-compile the checkout's package once, before anything is timed. pip compiles an installed
    package's bytecode; a checkout run with PYTHONDONTWRITEBYTECODE set (some shells and tools set it)
    would otherwise compile every module in every timed process, about 50 ms each here."""
    import compileall

    compileall.compile_dir(str(ROOT / "peersync"), quiet=1)


class Peersync:
    """Two peersync peers (own state folders) of one store through a local relay folder."""

    META = (".peersync", ".peersyncignore")

    def __init__(self, base: Path, a: Path, b: Path | None = None, name: str = "bench") -> None:
        self.base = base
        self.relay = base / "relay"
        self.a, self.b = a, b
        self.ha, self.hb = base / "home-a", base / "home-b"
        self.name = name
        self.relay.mkdir(parents=True, exist_ok=True)
        a.mkdir(parents=True, exist_ok=True)
        self.cli(self.ha, "init", str(a), "--relay", str(self.relay), "--name", name)
        if b is not None:
            b.mkdir(parents=True, exist_ok=True)
            code = self.cli(self.ha, "invite", name).out.strip().splitlines()[-1]
            self.cli(self.hb, "join", code, str(b), "--relay", str(self.relay))

    @staticmethod
    def env(home: Path) -> dict[str, str]:
        env = dict(os.environ, PEERSYNC_HOME=str(home), PYTHONPATH=str(ROOT))
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed peersync has its bytecode (see compile_peersync)
        return env

    @classmethod
    def cli(cls, home: Path, *args: str, timeout: float = 3600, check: bool = True) -> Run:
        return run([sys.executable, "-m", "peersync", *args], env=cls.env(home), timeout=timeout, check=check)

    def sync_a(self, timeout: float = 3600) -> Run:
        return self.cli(self.ha, "sync", "-q", timeout=timeout)

    def sync_b(self, timeout: float = 3600) -> Run:
        return self.cli(self.hb, "sync", "-q", timeout=timeout)

    def bundles(self) -> dict[Path, int]:
        return {p: p.stat().st_size for p in self.relay.rglob("*.psb")}

    def cmd(self, which: str, *args: str) -> list[str]:
        """The command line of a `peersync` call, for profilers; run with ``env(home)``."""
        return [sys.executable, "-m", "peersync", *args]


def cp_tree_plain(src: Path, dst: Path) -> None:
    """``cp -a src/. dst`` (untimed setup)."""
    dst.mkdir(parents=True, exist_ok=True)
    run(["cp", "-a", f"{src}/.", str(dst)], timeout=3600, measure_rss=False)


class ForeignLoad:
    """CPU used by user processes this suite did not start, sampled every few seconds.

    The machines are shared: another session's tests running meanwhile skew a
    timing. ``window()`` returns (mean, max) of cores used by other processes
    since the last call, which RESULTS.md prints beside each workload.
    """

    def __init__(self, interval: float = 2.0) -> None:
        import psutil

        self._psutil = psutil
        self.interval = interval
        self.me = os.getpid()
        self.samples: list[float] = []
        self.top: collections.Counter[str] = collections.Counter()
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _ours(self) -> set[int]:
        try:
            me = self._psutil.Process(self.me)
            return {self.me, *(c.pid for c in me.children(recursive=True))}
        except self._psutil.Error:
            return {self.me}

    def _loop(self) -> None:
        last_t = time.monotonic()
        while not self._stop.wait(self.interval):
            ours = self._ours()
            now = time.monotonic()
            used = 0.0
            seen: dict[int, float] = {}
            for p in self._psutil.process_iter(["pid", "ppid", "cpu_times", "name"]):
                info = p.info
                ct = info.get("cpu_times")
                if ct is None or info["pid"] in ours or 2 in (info["pid"], info.get("ppid")):
                    continue  # ours, or a kernel thread (the loop device's workers do our I/O)
                total = ct.user + ct.system
                seen[info["pid"]] = total
                prev = self._last.get(info["pid"])
                if prev is not None and total > prev:
                    used += total - prev
                    with self._lock:
                        self.top[str(info.get("name"))] += total - prev
            self._last = seen
            with self._lock:
                self.samples.append(used / max(now - last_t, 1e-3))
            last_t = now

    def window(self) -> tuple[float, float, str]:
        with self._lock:
            s, self.samples = self.samples, []
            top, self.top = self.top, collections.Counter()
        names = ", ".join(f"{n} {sec:.0f} s" for n, sec in top.most_common(3) if sec >= 1)
        return (sum(s) / len(s) if s else 0.0), (max(s) if s else 0.0), names

    def __enter__(self) -> ForeignLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
