"""What every benchmark here needs and none should write again: model shapes, the machine, the share of the CPU
that other processes take, idle waits, timers, peak memory, arms in fresh child processes, the result file.

Benchmarks import this module; it never imports a benchmark. A benchmark that runs its arms in child processes
passes its own script to ``run_child`` / ``run_lockstep``, which start it with CHILD_FLAG; its main then hands
its arm function to ``child_main``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

REPO_ROOT = Path(__file__).resolve().parents[2]

# Real model shapes with random weights, written inline so no hub access is needed.
_QWEN = dict(
    model_type="qwen2",
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    bos_token_id=151643,
    eos_token_id=151645,
    pad_token_id=151643,
    num_key_value_heads=2,
    tie_word_embeddings=True,
    vocab_size=151936,
)
SHAPES: dict[str, dict] = {
    "qwen2.5-0.5b": dict(_QWEN, hidden_size=896, num_hidden_layers=24, num_attention_heads=14, intermediate_size=4864),
    "qwen2.5-1.5b": dict(_QWEN, hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, intermediate_size=8960),
    "qwen2.5-7b": dict(
        _QWEN,
        hidden_size=3584,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        intermediate_size=18944,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
    # --tiny: a random tiny Llama, seconds per run.
    "tiny-llama": dict(
        model_type="llama",
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=512,
        tie_word_embeddings=True,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    ),
}


def config_from_dict(cfg: dict):
    """A transformers config from a SHAPES entry (or any dict with ``model_type``)."""
    from transformers import AutoConfig

    cfg = dict(cfg)
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def option(help: str, default=None, **metadata):
    """A documented field of a benchmark's options dataclass (``metadata`` goes to argparse, e.g. ``choices``)."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class MeasureOptions:
    """The machine options of a benchmark measured in one process (the base of its options dataclass): dtype,
    threads, device, idle waits and retries of disturbed runs, seed, quiet. Its ``__post_init__`` first fills in
    the mode's figures (``wait_idle``, ``retries``, ...), then calls :meth:`resolve_machine`."""

    dtype: Literal["auto", "fp32", "bf16"] = option(
        "auto: bf16 on CUDA and on CPUs with native bf16 (AMX / AVX512-BF16), else fp32 (emulated bf16 is slower).",
        "auto",
    )
    threads: int | None = option("torch.set_num_threads (default 2 on CPU).")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    wait_idle: float | None = option(
        "On CPU, first wait up to this many seconds for an idle machine (others under "
        "5%% of the CPU for 10 s; default: the mode's, 900 for a full run)."
    )
    wait_idle_each: float | None = option(
        "On CPU, also wait up to this long before each configuration (default min(60, wait_idle))."
    )
    max_foreign: float = option("On CPU, measure a run again if others took more than this share of the CPU.", 0.1)
    retries: int | None = option("How often one run may be measured again (default 2).")
    seed: int = option("Seed of the inputs and random weights.", 0)
    quiet: bool = option("No progress lines.", False)
    dtype_requested: str = field(default="auto", init=False)

    def resolve_machine(self) -> None:
        """Device, idle waits (CPU only), dtype and threads from ``auto`` / unset; checks ``retries``."""
        import torch

        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device != "cpu":  # idle waits and retries are for a shared CPU machine
            self.wait_idle = self.wait_idle_each = 0.0
        if self.wait_idle_each is None:
            self.wait_idle_each = min(60.0, self.wait_idle)
        if self.retries is None:
            self.retries = 2
        if self.retries < 0:
            raise SystemExit("--retries must be >= 0")
        self.dtype_requested = self.dtype
        if self.dtype == "auto":
            self.dtype = "bf16" if self.device == "cuda" or cpu_has_native_bf16() else "fp32"
        if self.threads is None and self.device == "cpu":
            self.threads = 2

    def torch_dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16}[self.dtype]


def parse_options(options_class, argv: list[str], prog: str):
    """The options dataclass parsed by trl's TrlParser (``--name``, ``--name-with-dashes``, ``--config x.yaml``)."""
    from trl import TrlParser

    (options,) = TrlParser([options_class], prog=prog, description=options_class.__doc__).parse_args_and_config(argv)
    return options


def start_run(options_class, argv: list[str] | None, module: str) -> tuple[list[str], MeasureOptions]:
    """``(argv, options)`` of a benchmark run as ``python -m module`` (``argv``: sys.argv[1:] when None); torch
    computes on ``options.threads`` threads from here on."""
    import torch

    argv = list(sys.argv[1:] if argv is None else argv)
    options = parse_options(options_class, argv, f"python -m {module}")
    if options.threads:
        torch.set_num_threads(options.threads)
    return argv, options


def log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ the machine
def _proc_lines(path: str):
    try:
        with open(path) as f:
            yield from f
    except OSError:
        return


def machine_info(device: str) -> dict:
    import torch
    import transformers

    cpu = next(
        (line.split(":", 1)[1].strip() for line in _proc_lines("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    mem_kib = next(
        (int(line.split()[1]) for line in _proc_lines("/proc/meminfo") if line.startswith("MemTotal:")), None
    )
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": None if mem_kib is None else round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes in bf16 natively (AMX or AVX512-BF16); without it bf16 is slower than fp32."""
    flags = next(
        (set(line.split(":", 1)[1].split()) for line in _proc_lines("/proc/cpuinfo") if line.startswith("flags")), set()
    )
    return bool(flags & {"amx_bf16", "avx512_bf16"})


# ----------------------------------------------------------------------------- other processes' share of the CPU
def cpu_snapshot() -> tuple[int, int, int] | None:
    """(machine busy jiffies, machine total jiffies, this process's jiffies), from /proc."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
        own_jiffies = int(own[11]) + int(own[12])  # utime + stime, all threads
    except (OSError, ValueError, IndexError):
        return None
    total = sum(fields)
    return total - fields[3] - fields[4], total, own_jiffies


def foreign_cpu_share(a, b) -> float | None:
    """Share of the machine's CPU capacity used by other processes (and the hypervisor) between two snapshots.

    Other jobs on a small CPU machine slow an arm down; this number says how much a measurement was disturbed.
    """
    if a is None or b is None or b[1] <= a[1]:
        return None
    return max(0.0, ((b[0] - a[0]) - (b[2] - a[2])) / (b[1] - a[1]))


MIN_JIFFIES = 50  # /proc/stat counts in 1/100 s per core: shorter spans give no meaningful share


def share_of(counts) -> float | None:
    """Other processes' share of the CPU over spans of ``[busy, total, own]`` jiffies (``None`` entries skipped);
    None when the spans were too short to tell."""
    busy, total, own = (sum(c[i] for c in counts if c) for i in range(3))
    return None if total < MIN_JIFFIES else max(0.0, (busy - own) / total)


def wait_for_idle(max_wait_s: float, what: str, quiet: bool, threshold: float = 0.05, windows: int = 2) -> dict | None:
    """Wait up to ``max_wait_s`` (none for <= 0) until the machine's CPU use (by any process) stays under
    ``threshold`` for ``windows`` 5-second windows; progress lines say ``what`` waits."""
    if max_wait_s <= 0:
        return None
    log(quiet, f"== waiting up to {max_wait_s:.0f} s for an idle machine ({what})")
    start, calm, last = time.perf_counter(), 0, None
    while calm < windows and time.perf_counter() - start < max_wait_s:
        a = cpu_snapshot()
        time.sleep(5.0)
        b = cpu_snapshot()
        if a is None or b is None or b[1] <= a[1]:
            return {"waited_s": time.perf_counter() - start, "idle": None}
        last = (b[0] - a[0]) / (b[1] - a[1])
        calm = calm + 1 if last < threshold else 0
    info = {"waited_s": time.perf_counter() - start, "idle": calm >= windows, "busy_share": last}
    if not info["idle"]:
        log(
            quiet,
            f"== machine still busy after {info['waited_s']:.0f} s (busy share {100 * (last or 0):.0f}%); "
            "measuring anyway",
        )
    return info


def measure_with_retries(
    fn, what: str, retries: int, max_foreign: float | None, wait_s: float, quiet: bool
) -> tuple[dict, list[dict]]:
    """``fn()`` returns a run with a ``foreign_cpu_share``; a run disturbed by other processes (share above
    ``max_foreign``; None: never) is discarded and, after waiting up to ``wait_s`` for an idle machine, measured
    again, at most ``retries`` times (the last attempt is kept whatever its share). Returns (kept, discarded)."""
    discarded = []
    while True:
        res = fn()
        share = res.get("foreign_cpu_share")
        if max_foreign is None or share is None or share <= max_foreign or len(discarded) == retries:
            return res, discarded
        discarded.append(res)
        log(quiet, f"   {what}: other processes took {100 * share:.0f}% of the CPU; measuring it again")
        wait_for_idle(wait_s, f"retry of {what}", quiet)


def measure_grid(batch_sizes, ks, measure, wait_idle: float, wait_idle_each: float, quiet: bool) -> dict:
    """``measure(batch, k)`` for every (batch, K), after waiting up to ``wait_idle`` for an idle machine first and
    up to ``wait_idle_each`` before each (batch, K) but the first. Returns ``rows`` (the results), ``measure_s``,
    the waits and other processes' share of the CPU over the whole measurement."""
    wait = wait_for_idle(wait_idle, "before measuring", quiet)
    start_snap, start = cpu_snapshot(), time.perf_counter()
    rows, waits = [], []
    for batch in batch_sizes:
        for k in ks:
            if rows:
                waits.append(wait_for_idle(wait_idle_each, f"batch {batch}, K {k}", quiet))
            log(quiet, f"== batch {batch}, K {k}")
            rows.append(measure(batch, k))
    return {
        "rows": rows,
        "foreign_cpu_share": foreign_cpu_share(start_snap, cpu_snapshot()),
        "measure_s": time.perf_counter() - start,
        "wait_idle": wait,
        "wait_idle_each": waits,
    }


def foreign_share_lines(result: dict, labels: dict[str, str], max_foreign: float, note: str = "") -> list[str]:
    """Markdown lines on other processes' share of the CPU: per arm (named by ``labels``) the worst over the rows'
    ``foreign_cpu_share`` during the kept timed calls, then ``note``, then the share over the whole measurement;
    a warning when an arm's share passed ``max_foreign``."""
    per: dict[str, float] = {}
    for r in result["results"]:
        for arm, v in r["foreign_cpu_share"].items():
            if v is not None:
                label = labels.get(arm, arm)
                per[label] = max(per.get(label, v), v)
    txt = ", ".join(f"{a} {100 * v:.0f}%" for a, v in per.items()) or "calls too short to tell"
    return [
        "",
        f"Other processes' share of the machine's CPU during the kept timed calls (worst (batch, K)): {txt}."
        f"{note} Over the whole measurement, waits and discarded runs included: "
        f"{100 * (result['foreign_cpu_share'] or 0):.0f}%.",
    ] + busy_warning(per.values(), max_foreign, "--repeats / --retries")


# ------------------------------------------------------------------------------------------------------ timers
def sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


class Timer:
    """Times calls (with CUDA sync) and adds up, per arm, the jiffies spent during them: ``counts[arm]`` =
    [machine busy, machine total, own] (JSON-friendly; ``share_of`` makes other processes' share of them)."""

    def __init__(self, device):
        self.device, self.counts = device, {}

    def __call__(self, arm: str, fn, *a, **kw):
        sync(self.device)
        snap, t0 = cpu_snapshot(), time.perf_counter()
        out = fn(*a, **kw)
        sync(self.device)
        dt, end = time.perf_counter() - t0, cpu_snapshot()
        counts = self.counts.setdefault(arm, [0, 0, 0])
        if snap is not None and end is not None and end[1] > snap[1]:
            self.counts[arm] = [c + y - x for c, x, y in zip(counts, snap, end)]
        return out, dt


# ----------------------------------------------------------------------------------------------------- memory
def proc_status_kib(key: str) -> int | None:
    return next((int(line.split()[1]) for line in _proc_lines("/proc/self/status") if line.startswith(key + ":")), None)


def mib(kib: int | None) -> float | None:
    return None if kib is None else kib / 1024


class MemoryProbe:
    """The memory one arm takes beyond its loaded model. Create it before loading, call ``loaded()`` right after
    (the baselines) and ``report()`` at the end. CPU: the peak RSS from ``loaded()`` on, the kernel's high-water
    mark (VmHWM) after resetting it, else sampled by a thread; CUDA also ``torch.cuda.max_memory_allocated``."""

    def __init__(self, cuda: bool, interval_s: float = 0.01):
        self.cuda, self.interval_s, self.rss_start_kib = cuda, interval_s, proc_status_kib("VmRSS")
        self.method, self._peak, self._stop, self._thread = "VmHWM", 0, threading.Event(), None

    def loaded(self) -> None:
        self.rss_after_load_kib, self.load_hwm_kib = proc_status_kib("VmRSS"), proc_status_kib("VmHWM")
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            self.cuda_after_load = torch.cuda.memory_allocated()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            hwm, rss = proc_status_kib("VmHWM"), proc_status_kib("VmRSS")
            if hwm is None or rss is None or hwm > rss * 1.05 + 1024:
                raise OSError("VmHWM did not reset")
        except OSError:
            self.method, self._peak = "sampled", proc_status_kib("VmRSS") or 0
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, proc_status_kib("VmRSS") or 0)
            time.sleep(self.interval_s)

    def report(self) -> dict:
        if self._thread is None:
            peak_kib = proc_status_kib("VmHWM") or 0
        else:
            self._stop.set()
            self._thread.join()
            peak_kib = max(self._peak, proc_status_kib("VmRSS") or 0)
        after = self.rss_after_load_kib
        memory = {
            "method": self.method,
            "rss_start_mib": mib(self.rss_start_kib),
            "rss_after_load_mib": mib(after),
            "load_peak_rss_mib": mib(self.load_hwm_kib),
            "peak_rss_mib": mib(peak_kib),
            "peak_rss_increase_mib": mib(peak_kib - after) if after else None,
        }
        if self.cuda:
            import torch

            peak = torch.cuda.max_memory_allocated()
            memory.update(
                method="torch.cuda.max_memory_allocated",
                cuda_after_load_mib=self.cuda_after_load / 2**20,
                cuda_peak_mib=peak / 2**20,
                cuda_peak_increase_mib=(peak - self.cuda_after_load) / 2**20,
            )
        return memory


def peak_increase_mib(memory: dict) -> float:
    return memory.get("cuda_peak_increase_mib", memory["peak_rss_increase_mib"])


def peak_total_mib(memory: dict) -> float:
    return memory.get("cuda_peak_mib", memory["peak_rss_mib"])


# ------------------------------------------------------------------------------------ arms in child processes
CHILD_FLAG = "--_child"  # argv of a child: [CHILD_FLAG, spec.json]; its main hands it to child_main
PROTOCOL = "@@lockstep"


def child_main(spec_path: str, arm_fn) -> None:
    """In the child: run ``arm_fn(spec)`` and write its result where the parent reads it."""
    spec = json.loads(Path(spec_path).read_text())
    Path(spec["result_path"]).write_text(json.dumps(arm_fn(spec)))


class TurnTaker:
    """Child side of the lockstep schedule: say "idle" on stdout, then block until the parent says "go"."""

    def wait_turn(self) -> None:
        sys.stdout.write(f"{PROTOCOL} idle\n")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if line.strip() != "go":
            raise RuntimeError(f"lockstep: expected 'go' from the parent, got {line!r}")


def _start_child(script: Path, spec: dict, tmp: str, i: int, **popen) -> tuple[subprocess.Popen, Path]:
    spec_path, out_path = Path(tmp) / f"spec{i}.json", Path(tmp) / f"result{i}.json"
    spec_path.write_text(json.dumps({**spec, "result_path": str(out_path)}))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if spec.get("threads"):
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(spec["threads"])
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    cmd = [sys.executable, str(script), CHILD_FLAG, str(spec_path)]
    return subprocess.Popen(cmd, cwd=str(REPO_ROOT), env=env, **popen), out_path


def _read_result(spec: dict, out_path: Path, returncode: int | None) -> dict:
    if returncode != 0 or not out_path.is_file():
        raise RuntimeError(
            f"arm {spec['arm']!r} failed in its subprocess (exit code {returncode}); its output is above."
        )
    return json.loads(out_path.read_text())


def run_child(script: Path, spec: dict) -> dict:
    """Run one arm in a fresh Python process (``script`` with CHILD_FLAG): fair peak memory, nothing shared."""
    with tempfile.TemporaryDirectory(prefix="bench_child_") as tmp:
        proc, out = _start_child(script, spec, tmp, 0)
        return _read_result(spec, out, proc.wait())


def _await_idle(proc: subprocess.Popen, arm: str) -> None:
    """Read the child's stdout until it reports idle, passing its other output through."""
    for line in proc.stdout:
        if line.startswith(PROTOCOL):
            return
        sys.stdout.write(line)
    raise RuntimeError(f"arm {arm!r} exited (code {proc.wait()}) before finishing; its output is above.")


def run_lockstep(script: Path, specs: list[dict], total_steps: int) -> list[dict]:
    """All arms in fresh subprocesses at once, taking turns: A's step k, B's step k, B's step k+1, A's ...

    Each child calls ``TurnTaker().wait_turn()`` before every step and once after its last, so only one arm
    computes at any moment: a neighbour's load or a frequency change lands on all arms alike, while each arm
    keeps its own process for a clean peak-memory reading.
    """
    with tempfile.TemporaryDirectory(prefix="bench_lockstep_") as tmp:
        procs, outs = [], []
        try:
            for i, spec in enumerate(specs):
                proc, out = _start_child(
                    script,
                    {**spec, "lockstep": True},
                    tmp,
                    i,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    bufsize=1,
                )
                procs.append(proc)
                outs.append(out)
            for proc, spec in zip(procs, specs):  # all models loaded and trainers built: nothing else runs now
                _await_idle(proc, spec["arm"])
            idx = list(range(len(specs)))
            for k in range(total_steps + 1):  # the extra turn lets each arm finish training in its own slot
                for i in idx if k % 2 == 0 else idx[::-1]:
                    procs[i].stdin.write("go\n")
                    procs[i].stdin.flush()
                    if k < total_steps:
                        _await_idle(procs[i], specs[i]["arm"])
            results = []
            for proc, spec, out in zip(procs, specs, outs):
                sys.stdout.write(proc.stdout.read())
                results.append(_read_result(spec, out, proc.wait()))
            return results
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


# ---------------------------------------------------------------------------------------------------- results
def command_line(module: str, argv: list[str]) -> str:
    import shlex

    return f"python -m {module}" + ("" if not argv else " " + shlex.join(argv))


def markdown_head(result: dict, threads, extra: str = "") -> list[str]:
    """The command and the machine, the first lines of every benchmark's table."""
    m = result["machine"]
    dev = m["device"] + (f" ({m['gpu']})" if m.get("gpu") else "")
    return [
        f"Command: `{result['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM; torch {m['torch']}, "
        f"transformers {m['transformers']}; device {dev}; threads {threads or 'torch default'}{extra}",
    ]


def markdown_table(columns: list[str], rows: list[list], text: tuple[int, ...] = (0,)) -> list[str]:
    """A markdown table: the columns at the ``text`` positions left-aligned, the others (figures) right-aligned."""
    rule = "".join("---|" if i in text else "---:|" for i in range(len(columns)))
    lines = ["| " + " | ".join(columns) + " |", "|" + rule]
    return lines + ["|" + "|".join(f" {x} " if str(x) else " " for x in row) + "|" for row in rows]


def busy_warning(shares, limit: float, advice: str) -> list[str]:
    """A warning line when other processes took more than ``limit`` of the CPU during a kept measurement."""
    if not any(v is not None and v > limit for v in shares):
        return []
    return [
        f"WARNING: the machine was busy with other work during the measurement; the timings are disturbed "
        f"(re-run on an idle machine, or raise {advice})."
    ]


def write_result(result: dict, output: str, default_output: str, markdown) -> dict:
    """Stamp the result, add ``markdown(result)``, write the JSON (the default path is relative to the repository
    root), print the table and the path."""
    result.update(timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    result["markdown"] = markdown(result)
    out = REPO_ROOT / default_output if output == default_output else Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(result["markdown"])
    print(f"\nwritten to {out}")
    return result
