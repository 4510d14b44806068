"""Edit-to-apply latency between two running peers on one machine with a local relay.

Two `peersync run` services (own state folders, own stores, one relay folder)
are started; the script then makes N single small-file edits on A and times
each one until B's copy holds the new content. Prints median and 99th
percentile. Not a test: nothing asserts a time.

    python -m benchmarks.latency [--edits 100] [--dir SCRATCH]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def peersync(home: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PEERSYNC_HOME=str(home), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "peersync", *args], env=env, capture_output=True, text=True,
                          check=True, timeout=120)


def start(home: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PEERSYNC_HOME=str(home), PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "peersync", "run", "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def edit_loop(a_file: Path, b_file: Path, edits: int, timeout: float = 30.0, pause: float = 0.05) -> list[float]:
    """Write ``a_file`` ``edits`` times; time each write until ``b_file`` holds the same content."""
    samples: list[float] = []
    for i in range(edits):
        content = f"edit {i} {time.time_ns()}\n".encode()
        t0 = time.perf_counter()
        a_file.write_bytes(content)
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            try:
                if b_file.read_bytes() == content:
                    break
            except OSError:
                pass
            time.sleep(0.005)
        else:
            raise TimeoutError(f"edit {i} did not arrive within {timeout} s")
        samples.append(time.perf_counter() - t0)
        time.sleep(pause)
    return samples


def _sampler(pids: list[int]):  # type: ignore[no-untyped-def]
    from .common import RssSampler

    s = RssSampler(pids)
    s.__enter__()
    return s


def measure(base: Path, edits: int, timeout: float = 30.0, peak_rss: list[int] | None = None) -> list[float]:
    """Median-ready samples of ``edits`` edits; appends the services' peak RSS (KiB) to ``peak_rss`` if given."""
    relay = base / "relay"
    relay.mkdir(parents=True)
    a_home, b_home, a, b = base / "ha", base / "hb", base / "a", base / "b"
    peersync(a_home, "init", str(a), "--relay", str(relay), "--name", "bench")
    code = peersync(a_home, "invite", "bench").stdout.strip().splitlines()[-1]
    peersync(b_home, "join", code, str(b), "--relay", str(relay))
    procs = [start(a_home), start(b_home)]
    try:
        time.sleep(2.0)  # let both finish their first full scan
        sampler = _sampler([p.pid for p in procs]) if peak_rss is not None else None
        try:
            samples = edit_loop(a / "note.txt", b / "note.txt", edits, timeout)
        finally:
            if sampler is not None and peak_rss is not None:
                sampler.__exit__()
                peak_rss.append(max(sampler.peak.values()) // 1024)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edits", type=int, default=100)
    ap.add_argument("--dir", help="scratch folder (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        try:
            samples = measure(Path(tmp), args.edits)
        except TimeoutError as exc:
            raise SystemExit(str(exc)) from None
    print(f"edits: {len(samples)}")
    print(f"median: {statistics.median(samples) * 1000:.0f} ms")
    print(f"p99:    {percentile(samples, 99) * 1000:.0f} ms")
    print(f"max:    {max(samples) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
