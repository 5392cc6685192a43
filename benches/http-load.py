#!/usr/bin/env python3
"""HTTP load test of rbees-workerd on loopback, one worker per configuration.

For every value N of --parallels, the script starts

    rbees-workerd --worker-id load --model M --port P --backend B --threads T
                  --queue-depth Q --parallel N [extra worker args]

(`none` in --parallels leaves --parallel out, for workers without the flag),
waits until `GET /v1/ready` answers `"ready": true`, sends one untimed warm-up
request, then lets C client threads loose at once, each sending R requests
one after the other to `POST /execute`:

    {"job_id": unique, "prompt": one of 8 fixed prompts, "max_tokens": M,
     "temperature": 0, "ignore_eos": true}

and reads the server-sent events (`started`, `token`, `metrics`, `end` or
`error`). A 503 (queue full) is retried after its Retry-After delay and
counted. Then the worker gets SIGTERM.

Measured per request (times on the client's monotonic clock):
  - TTFT: from sending the request (its first attempt, so 503 back-offs
    count) to the first `token` event;
  - latency: from sending the request to the `end` event;
  - tokens_out and prompt_tokens from the `end` event.
Per configuration:
  - gen tok/s: the sum of tokens_out of the successful requests divided by
    the wall time of the whole load (first request sent to last one done);
  - TTFT p50/p95/p99 and latency p50/p95 over successful requests;
  - ok / error counts and the number of 503 retries.

Prints a markdown table, one row per configuration, under the CPU model
name, the date and the command line; --json FILE also writes every setting,
aggregate and per-request record. Exit status: 0 when every request
succeeded, 1 when some failed, 2 when a worker could not be started.

Standard library only (Python 3.11). Example:

    benches/http-load.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --parallels 1,8 --clients 32 --requests 4 --max-tokens 64
    benches/http-load.py --model M --parallels none --clients 8 --requests 1 \\
        --max-tokens 16 -- --ctx-size 512     # after --: extra worker args
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field

HOST = "127.0.0.1"

# Eight distinct prompts of different lengths (a few to a few dozen tokens).
PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator works to a ten-year-old.",
    "List five practical tips for learning a new programming language, with one sentence on each.",
    "What are the main differences between a comet and an asteroid?",
    "Describe a walk through a busy market in a coastal town early in the morning, "
    "with the sounds, the smells and the people you meet.",
    "Summarize the water cycle in a few sentences.",
    "Give me a recipe for a simple vegetable soup.",
    "Why is the sky blue? Answer briefly, then give a longer explanation with the physics involved.",
]


@dataclass
class RequestResult:
    client: int
    index: int
    job_id: str
    prompt_index: int
    ok: bool = False
    error: str | None = None
    retries_503: int = 0
    ttft_s: float | None = None
    latency_s: float | None = None
    tokens_out: int = 0
    prompt_tokens: int | None = None
    stop_reason: str | None = None
    token_events: int = 0
    # Unix ms when the engine took the job (`started` event) minus the wall
    # clock when the request was first sent: time spent queued.
    queue_wait_s: float | None = None
    start_offset_s: float = 0.0  # first send, relative to the load's start
    end_offset_s: float = 0.0


@dataclass
class ConfigResult:
    parallel: int | None
    worker_cmd: list[str]
    ok: int = 0
    errors: int = 0
    retries_503: int = 0
    tokens_out: int = 0
    wall_s: float = 0.0
    gen_tok_s: float = 0.0
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None
    ttft_p99_s: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    queue_wait_p50_s: float | None = None
    worker_exit_status: int | None = None
    error_samples: list[str] = field(default_factory=list)
    requests: list[RequestResult] = field(default_factory=list)


class WorkerStartError(Exception):
    pass


def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def auth_headers() -> dict[str, str]:
    token = os.environ.get("RBEES_API_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def tail(path: str, n: int = 30) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return f"(cannot read {path}: {e})"


# --------------------------------------------------------------------------
# The worker process


class Worker:
    """One rbees-workerd child; stderr/stdout go to a temporary log file."""

    def __init__(self, cmd: list[str], port: int):
        self.cmd = cmd
        self.port = port
        fd, self.log_path = tempfile.mkstemp(prefix="rbees-workerd-load.", suffix=".log")
        self.log = os.fdopen(fd, "w")
        try:
            self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        except OSError as e:
            raise WorkerStartError(f"cannot run {cmd[0]}: {e}") from e

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise WorkerStartError(
                    f"the worker exited with status {rc} before it was ready; "
                    f"last lines of its log ({self.log_path}):\n{tail(self.log_path)}"
                )
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
                conn.request("GET", "/v1/ready", headers=auth_headers())
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                if resp.status == 200:
                    ready = json.loads(body)
                    if ready.get("ready"):
                        return
                    if ready.get("error") or ready.get("state") == "error":
                        raise WorkerStartError(
                            f"the worker failed to load the model: {ready.get('error')}; "
                            f"last lines of its log ({self.log_path}):\n{tail(self.log_path)}"
                        )
                    last = f"state {ready.get('state')}, layers {ready.get('layers_loaded')}/{ready.get('layers_total')}"
                else:
                    last = f"HTTP {resp.status}: {body[:200]!r}"
            except (OSError, http.client.HTTPException, ValueError) as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.2)
        raise WorkerStartError(
            f"the worker was not ready within {timeout_s:.0f} s ({last}); "
            f"last lines of its log ({self.log_path}):\n{tail(self.log_path)}"
        )

    def stop(self, grace_s: float = 45.0) -> int | None:
        """SIGTERM, then SIGKILL after grace_s; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                print(f"warning: the worker ignored SIGTERM for {grace_s:.0f} s; killing it", file=sys.stderr)
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


# --------------------------------------------------------------------------
# One request


def read_sse(resp: http.client.HTTPResponse):
    """Yields (event, data) for each server-sent event of the response."""
    event, data = "message", []
    while True:
        raw = resp.readline()
        if not raw:
            return
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue  # comment (keep-alive)
        else:
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def execute(port: int, body: dict, result: RequestResult, load_t0: float, timeout_s: float,
            max_retries: int) -> None:
    """Sends one /execute request (retrying 503s) and fills in `result`."""
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream", **auth_headers()}
    t_send = time.monotonic()
    wall_send = time.time()
    result.start_offset_s = t_send - load_t0
    try:
        while True:
            conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
            try:
                conn.request("POST", "/execute", body=payload, headers=headers)
                resp = conn.getresponse()
                if resp.status == 503:
                    detail = resp.read()[:300]
                    if result.retries_503 >= max_retries:
                        result.error = f"HTTP 503 after {max_retries} retries: {detail!r}"
                        return
                    result.retries_503 += 1
                    try:
                        delay = float(resp.getheader("Retry-After", "1"))
                    except ValueError:
                        delay = 1.0
                    time.sleep(max(delay, 0.05))
                    continue
                if resp.status != 200:
                    result.error = f"HTTP {resp.status}: {resp.read()[:300]!r}"
                    return
                for event, data in read_sse(resp):
                    if event == "token":
                        if result.ttft_s is None:
                            result.ttft_s = time.monotonic() - t_send
                        result.token_events += 1
                    elif event == "started":
                        started_at_ms = json.loads(data).get("started_at")
                        if isinstance(started_at_ms, (int, float)):
                            result.queue_wait_s = max(0.0, started_at_ms / 1000.0 - wall_send)
                    elif event == "end":
                        end = json.loads(data)
                        result.latency_s = time.monotonic() - t_send
                        result.tokens_out = int(end.get("tokens_out", 0))
                        result.prompt_tokens = end.get("prompt_tokens")
                        result.stop_reason = end.get("stop_reason")
                        result.ok = True
                        return
                    elif event == "error":
                        result.error = f"event: error {data}"
                        return
                result.error = "the stream ended without an end or error event"
                return
            finally:
                conn.close()
    except (OSError, http.client.HTTPException, ValueError) as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        result.end_offset_s = time.monotonic() - load_t0


# --------------------------------------------------------------------------
# One configuration


def request_body(args, job_id: str, prompt_index: int, max_tokens: int) -> dict:
    body = {
        "job_id": job_id,
        "prompt": PROMPTS[prompt_index],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if not args.no_ignore_eos:
        body["ignore_eos"] = True
    return body


def run_config(args, parallel: int | None, extra: list[str]) -> ConfigResult:
    port = free_port()
    cmd = [args.worker_bin, "--worker-id", "load", "--model", args.model, "--port", str(port),
           "--backend", args.backend, "--threads", str(args.threads),
           "--queue-depth", str(args.queue_depth)]
    if parallel is not None:
        cmd += ["--parallel", str(parallel)]
    cmd += extra
    label = "without --parallel" if parallel is None else f"--parallel {parallel}"
    print(f"[{label}] starting: {shlex.join(cmd)}", file=sys.stderr)
    worker = Worker(cmd, port)
    cfg = ConfigResult(parallel=parallel, worker_cmd=cmd)
    ready = False
    try:
        t = time.monotonic()
        worker.wait_ready(args.ready_timeout)
        ready = True
        print(f"[{label}] ready after {time.monotonic() - t:.1f} s", file=sys.stderr)

        for w in range(args.warmup):
            warm = RequestResult(client=-1, index=w, job_id=f"warmup-{uuid.uuid4().hex[:12]}", prompt_index=0)
            execute(port, request_body(args, warm.job_id, 0, min(args.max_tokens, 8)), warm,
                    time.monotonic(), args.request_timeout, args.max_retries)
            if not warm.ok:
                raise WorkerStartError(f"the warm-up request failed: {warm.error}; last lines of the "
                                       f"worker's log ({worker.log_path}):\n{tail(worker.log_path)}")

        results = [[RequestResult(client=c, index=r, job_id=f"load-{c}-{r}-{uuid.uuid4().hex[:12]}",
                                  prompt_index=(c * args.requests + r) % len(PROMPTS))
                    for r in range(args.requests)] for c in range(args.clients)]
        barrier = threading.Barrier(args.clients + 1)
        load_t0 = 0.0

        def client(c: int) -> None:
            barrier.wait()
            for res in results[c]:
                execute(port, request_body(args, res.job_id, res.prompt_index, args.max_tokens), res,
                        load_t0, args.request_timeout, args.max_retries)

        threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(args.clients)]
        for th in threads:
            th.start()
        print(f"[{label}] load: {args.clients} clients x {args.requests} requests, "
              f"max_tokens {args.max_tokens}", file=sys.stderr)
        load_t0 = time.monotonic()
        barrier.wait()
        for th in threads:
            th.join()
        cfg.wall_s = time.monotonic() - load_t0
    finally:
        cfg.worker_exit_status = worker.stop()
        if ready and cfg.worker_exit_status not in (0, None):
            print(f"warning: the worker exited with status {cfg.worker_exit_status}; last lines of its log "
                  f"({worker.log_path}):\n{tail(worker.log_path)}", file=sys.stderr)

    cfg.requests = [r for per_client in results for r in per_client]
    ok = [r for r in cfg.requests if r.ok]
    cfg.ok = len(ok)
    cfg.errors = len(cfg.requests) - cfg.ok
    cfg.retries_503 = sum(r.retries_503 for r in cfg.requests)
    cfg.tokens_out = sum(r.tokens_out for r in ok)
    cfg.gen_tok_s = cfg.tokens_out / cfg.wall_s if cfg.wall_s > 0 else 0.0
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    lat = [r.latency_s for r in ok if r.latency_s is not None]
    qw = [r.queue_wait_s for r in ok if r.queue_wait_s is not None]
    cfg.ttft_p50_s, cfg.ttft_p95_s, cfg.ttft_p99_s = (percentile(ttft, p) for p in (50, 95, 99))
    cfg.latency_p50_s, cfg.latency_p95_s = (percentile(lat, p) for p in (50, 95))
    cfg.queue_wait_p50_s = percentile(qw, 50)
    errors = sorted({r.error for r in cfg.requests if r.error})
    cfg.error_samples = errors[:5]
    short = [r for r in ok if r.tokens_out != args.max_tokens]
    if short and not args.no_ignore_eos:
        print(f"[{label}] note: {len(short)} requests ended with fewer than max_tokens tokens "
              f"(stop reasons: {sorted({r.stop_reason for r in short})})", file=sys.stderr)
    print(f"[{label}] done: {cfg.ok} ok, {cfg.errors} errors, {cfg.retries_503} 503 retries, "
          f"{cfg.gen_tok_s:.1f} generated tok/s", file=sys.stderr)
    return cfg


# --------------------------------------------------------------------------
# Report


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def report(args, header: dict, configs: list[ConfigResult]) -> str:
    lines = [
        "## rbees-workerd HTTP load",
        "",
        f"- CPU: {header['cpu']}",
        f"- date: {header['date']}",
        f"- command: `{header['command']}`",
        f"- model: {args.model}, backend {args.backend}, threads {args.threads}, "
        f"queue depth {args.queue_depth}",
        f"- load: {args.clients} clients x {args.requests} requests, max_tokens {args.max_tokens}, "
        f"temperature 0, ignore_eos {not args.no_ignore_eos}, {len(PROMPTS)} prompts",
        "",
        "| parallel | ok | errors | 503 retries | wall s | gen tok/s | TTFT p50 ms | TTFT p95 ms "
        "| TTFT p99 ms | latency p50 s | latency p95 s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in configs:
        par = "(no flag)" if c.parallel is None else str(c.parallel)
        lines.append(
            f"| {par} | {c.ok} | {c.errors} | {c.retries_503} | {c.wall_s:.2f} | {c.gen_tok_s:.1f} "
            f"| {ms(c.ttft_p50_s)} | {ms(c.ttft_p95_s)} | {ms(c.ttft_p99_s)} "
            f"| {secs(c.latency_p50_s)} | {secs(c.latency_p95_s)} |"
        )
    for c in configs:
        for e in c.error_samples:
            par = "no flag" if c.parallel is None else c.parallel
            lines.append(f"\nerror (parallel {par}): {e}")
    return "\n".join(lines)


def parse_parallels(text: str) -> list[int | None]:
    out: list[int | None] = []
    for item in text.split(","):
        item = item.strip()
        if item == "none":
            out.append(None)
        elif item.isdigit() and int(item) > 0:
            out.append(int(item))
        else:
            raise argparse.ArgumentTypeError(f"'{item}' is neither a positive integer nor 'none'")
    return out


def main() -> int:
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]

    p = argparse.ArgumentParser(
        description="HTTP load test of rbees-workerd (see the module docstring); "
                    "arguments after -- go to the worker.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--worker-bin", default="target/release/rbees-workerd", help="rbees-workerd to start")
    p.add_argument("--model", required=True, help="GGUF model file")
    p.add_argument("--backend", default="cpu", help="the worker's --backend")
    p.add_argument("--threads", type=int, default=2, help="the worker's --threads")
    p.add_argument("--parallels", type=parse_parallels, default="1,8",
                   help="comma-separated --parallel values; 'none' starts the worker without --parallel")
    p.add_argument("--queue-depth", type=int, default=64,
                   help="the worker's --queue-depth (more than --clients, so clients queue instead of getting 503)")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients")
    p.add_argument("--requests", type=int, default=4, help="requests per client, one after the other")
    p.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request")
    p.add_argument("--no-ignore-eos", action="store_true",
                   help="leave ignore_eos out of the request (generation may stop early at EOS)")
    p.add_argument("--warmup", type=int, default=1, help="untimed requests before the load")
    p.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for /v1/ready")
    p.add_argument("--request-timeout", type=float, default=600.0, help="socket timeout per request, seconds")
    p.add_argument("--max-retries", type=int, default=1000, help="503 retries per request before it counts as an error")
    p.add_argument("--json", metavar="FILE", help="write settings, aggregates and per-request records here")
    args = p.parse_args(argv)
    if args.clients < 1 or args.requests < 1 or args.max_tokens < 1:
        p.error("--clients, --requests and --max-tokens must be at least 1")
    if not os.path.isfile(args.model):
        p.error(f"no model file {args.model}")
    if not (os.path.isfile(args.worker_bin) and os.access(args.worker_bin, os.X_OK)):
        p.error(f"no executable worker at {args.worker_bin} (build it: cargo build --release -p rbees-worker)")

    header = {
        "cpu": cpu_model(),
        "date": datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "command": shlex.join([sys.argv[0], *sys.argv[1:]]),
        "python": platform.python_version(),
    }
    configs: list[ConfigResult] = []
    try:
        for parallel in args.parallels:
            configs.append(run_config(args, parallel, extra))
    except WorkerStartError as e:
        print(f"error: {e}", file=sys.stderr)
        if configs:
            print(report(args, header, configs))
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

    print(report(args, header, configs))
    if args.json:
        settings = {k: v for k, v in vars(args).items()}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({**header, "settings": settings, "extra_worker_args": extra, "prompts": PROMPTS,
                       "configs": [asdict(c) for c in configs]}, f, indent=2)
            f.write("\n")
        print(f"\n(JSON written to {args.json})", file=sys.stderr)
    return 1 if any(c.errors for c in configs) else 0


if __name__ == "__main__":
    sys.exit(main())
