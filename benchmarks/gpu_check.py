"""The GPU check: the whole CUDA path proved in one command, sized for a short device lease.

    python benchmarks/gpu_check.py --out DIR            # one CUDA GPU (H100/H200): ≤ 8 minutes
    python benchmarks/gpu_check.py --out DIR --smoke    # any machine: CPU, tiny sizes, ≤ 2 minutes (CI)

Writes ``DIR/gpu_check.json`` (every figure) and ``DIR/gpu_check.md`` (the same, to read),
both rewritten after each section, so a lease that ends early still leaves what was
measured. Working files (runs, logs, the smoke data) go under ``DIR/work`` (``--work-dir``).

Sections, in this order. Each runs in its own process under a time cap (its share of the
8 minutes, plus whatever earlier sections left unused, but never the later sections' shares
nor more than what is left of ``--budget-s``): process-wide switches
(deterministic algorithms, cuDNN autotuning, compiled graphs) cannot leak from one
section into the next, and a section that hangs or runs slow is killed and recorded as
``timeout`` with what it had measured. Inside a section every measurement records its
figures, or its error, and the section carries on.

=============  ======  ==================================================================
section        cap     what
=============  ======  ==================================================================
environment     20 s   torch / CUDA / cuDNN versions, device, memory, TF32 switches,
                       packages, the measured bf16 matmul rate (8192³), attack registry
correctness    120 s   ``pytest -m cuda`` (tests/test_cuda.py): on-device uint8 crop/flip
                       = CPU; head, penalty, losses in float32 under bf16 autocast;
                       DeepFool's vmapped Jacobians = CPU; LPC at γ = 1e6 without NaN;
                       ``--compile``; a ``--deterministic`` run killed with SIGKILL and
                       resumed, bitwise equal to an uninterrupted one
throughput     140 s   ResNet-18 (CIFAR-10) and ResNet-50 (CIFAR-100's 100 classes):
                       training img/s in float32, bf16 + channels_last and + ``--compile``
                       (compiled last, if time is left); each against the physical anchor
                       (FLOPs per image, forward + backward, counted by torch, at the
                       measured bf16 matmul rate and at the datasheet's); one epoch of the
                       on-device pipeline against a torchvision DataLoader (50,000 / 20,000
                       synthetic images)
real_run       130 s   ``bench run --suite cifar10-small --plugins LPC NoPen --set
                       recipe.epochs=5`` on the CIFAR-10 JPEGs (``--data-root``), with the
                       suite's evaluators at its reduced attack budgets; ``bench report``;
                       ``bench run --suite cifar10 --estimate-only`` (the paper's recipe)
attacks         60 s   our DeepFool against foolbox's L2DeepFool (all candidates) and
                       torchattacks' DeepFool on a trained small CNN and ResNet-18: time,
                       ratios (targets ≥ 3× and ≥ 100×), per-input ρ agreement; ρ with
                       cuDNN's TF32 on (PyTorch's default) and off; AutoAttack's time per
                       1,000 inputs when ``autoattack-l2``/``autoattack-linf`` are registered
=============  ======  ==================================================================

Total 470 s, leaving the rest of 8 minutes to the script's own start (torch's import,
before the clock starts). The caps are estimates for an H100/H200 that no device has
confirmed yet; the report records each section's wall and CPU time to resize them.
``--smoke`` runs every section on the CPU at tiny sizes (tiny CNNs in the ResNets' places,
``torch.compile`` with the ``eager`` backend: the script's path without code generation;
the cuda tests run on the CPU stand-in, but for the two that take minutes there) with 90 s caps and a 300 s budget, guards for a
loaded CI machine: it needs about a minute of CPU. tests/test_gpu_check.py runs it.

Exit status: 0 when every section is ``ok`` or ``skipped`` (with its reason: a missing
data folder, a missing package); 1 when one recorded an error or hit its cap (the files
still hold everything else); 2 for bad input, e.g. no CUDA device without ``--smoke``.

On a device machine without internet: the project needs no install (the subprocesses get
this checkout on ``PYTHONPATH``), but foolbox (with eagerpy, GitPython, gitdb, smmap) and
torchattacks may be missing there: carry them as wheels, or the attack comparisons and the
real run's foolbox attacks are recorded as skipped. Give the CIFAR-10 JPEGs with
``--data-root``. Where only a few files come back, ``--out OUTDIR --work-dir /tmp/gpu_check``
leaves four in OUTDIR: gpu_check.json, gpu_check.md, leaderboard-cifar10-small.md and
gpu_check_logs.tar.gz (every log).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for _path in (str(REPO), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bench.core import io  # noqa: E402
from bench_pipeline import TRAINING_MODES  # noqa: E402

SCHEMA = 1
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "datasets" / "cifar10-jpeg"
FULL_BUDGET_S, SMOKE_BUDGET_S = 470.0, 300.0
WORK = "work"
# dense bf16 matrix rate from the vendors' datasheets (TFLOP/s, without sparsity); a lead,
# the measured matmul rate is the other anchor
DATASHEET_BF16_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0),
                         ("L40S", 362.0), ("L4", 121.0))
# the issue's anchor, "≈ 1.7 GFLOP per image forward + backward" for ResNet-18 at 32×32, is
# its count of multiply-adds; torch's counter (and every rate here) counts 2 FLOPs per multiply-add
ISSUE_ANCHOR_RESNET18_GMAC = 1.7


# ----- recording -----------------------------------------------------------------------

def write_json(path: Path, data: Any) -> None:
    """Atomically, in insertion order (sections and measurements read in the order they ran)."""
    io.atomic_write_text(path, json.dumps(io._jsonable(data), indent=2) + "\n")


class SkipItem(Exception):
    """A measurement that cannot run here (missing package, no time left): recorded as skipped."""


class SkipSection(Exception):
    """The whole section cannot run here (e.g. no data folder): recorded as skipped."""


class Recorder:
    """A section's figures, errors and skips, written (atomically) to its JSON file on every change."""

    def __init__(self, path: Path, deadline: float) -> None:
        self.path = path
        self.deadline = deadline
        self.data: dict[str, Any] = {"figures": {}, "errors": {}, "skipped": {}, "skip_reason": None}
        self.flush()

    def flush(self) -> None:
        write_json(self.path, self.data)

    def remaining(self) -> float:
        return self.deadline - time.time()

    def put(self, key: str, value: Any) -> None:
        """Record ``value`` under ``key``; "a/b" nests."""
        node = self.data["figures"]
        *parents, leaf = key.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        self.flush()

    def need(self, seconds: float, what: str) -> None:
        """Skip ``what`` unless about ``seconds`` are left before the section's cap."""
        left = self.remaining()
        if left < seconds:
            raise SkipItem(f"{left:.0f} s left of the section's cap; {what} needs about {seconds:.0f} s")

    @contextlib.contextmanager
    def item(self, key: str):
        """One measurement: an exception is recorded under ``key`` and the section goes on."""
        try:
            yield
        except SkipItem as exc:
            self.data["skipped"][key] = str(exc)
            self.flush()
        except Exception as exc:  # recorded, never fatal: the other measurements still count
            self.data["errors"][key] = f"{type(exc).__name__}: {exc}"[:2000]
            self.flush()
            traceback.print_exc()


@dataclass(frozen=True)
class Settings:
    out: Path
    smoke: bool
    data_root: Path
    work: Path          # runs, logs, generated data: DIR/work unless --work-dir

    def rel(self, path: Path) -> str:
        """``path`` as recorded: relative to the work folder."""
        return str(Path(path).relative_to(self.work))


def child_env(smoke: bool) -> dict[str, str]:
    """The environment of every subprocess: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env.update(PYTHONUNBUFFERED="1", TQDM_DISABLE="1", PYTHONWARNINGS="ignore")
    if smoke:  # tiny models on a possibly shared CPU: one thread is the fastest
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def children_cpu_s() -> float:
    """CPU seconds (user + system) of the finished subprocesses of this process and theirs."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_process(cmd: list[str], *, log: Path, timeout: float, cwd: Path = REPO,
                env: dict[str, str] | None = None) -> tuple[int | None, float]:
    """Run ``cmd`` (its own process group) with stdout+stderr to ``log``; (exit code or None
    when it was killed at ``timeout``, seconds)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    return code, time.perf_counter() - started


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def check_time_left(rec: Recorder, seconds: float, what: str) -> float:
    """Seconds a subprocess may run: what is left of the cap, minus a margin to record it."""
    rec.need(seconds, what)
    return rec.remaining() - 2.0


def sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def section_device(s: Settings):
    import torch
    return torch.device("cpu" if s.smoke else "cuda")


def bf16_matmul_tflops(device, n: int, reps: int) -> dict:
    """The bf16 matrix rate measured here: an n×n×n product, mean of ``reps`` after 10 warm-ups
    (which also bring an idle GPU's clock up)."""
    import torch
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g)
    for _ in range(10):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    seconds = (time.perf_counter() - t0) / reps
    return {"n": n, "reps": reps, "seconds_per_product": seconds, "tflops": 2 * n ** 3 / seconds / 1e12}


def datasheet_tflops(device_name: str) -> float | None:
    for key, value in DATASHEET_BF16_TFLOPS:
        if key in device_name:
            return value
    return None


# ----- 1. environment --------------------------------------------------------------------

PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "pandas", "matplotlib", "pyyaml", "tabulate",
            "tqdm", "foolbox", "eagerpy", "GitPython", "torchattacks", "pyautoattack", "autoattack", "triton",
            "pytest", "pytest-benchmark", "pillow")


def section_environment(rec: Recorder, s: Settings) -> None:
    import importlib.metadata as md
    import torch
    device = section_device(s)
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "cuda_available": torch.cuda.is_available(), "device": str(device), "torch_threads": torch.get_num_threads(),
           "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
           "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
           "float32_matmul_precision": torch.get_float32_matmul_precision()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        env.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                   multiprocessors=props.multi_processor_count, memory_total_gib=total / 2**30,
                   memory_free_gib=free / 2**30, datasheet_bf16_tflops=datasheet_tflops(props.name))
    else:
        from bench.core.provenance import hardware
        env["device_name"] = hardware(device)
    rec.put("environment", env)
    with rec.item("driver"):
        if shutil.which("nvidia-smi") is None:
            raise SkipItem("nvidia-smi not found")
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=15)
        rec.put("driver", out.stdout.strip() or out.stderr.strip())
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    rec.put("packages", versions)
    rec.put("missing_packages", sorted(k for k, v in versions.items() if v is None and k != "autoattack"))
    with rec.item("bf16_matmul"):
        n, reps = (256, 3) if s.smoke else (8192, 50)
        rec.put("bf16_matmul", bf16_matmul_tflops(device, n, reps))
    with rec.item("attack_registry"):
        from bench.attacks.methods import ATTACKS
        from bench.suites.imports import load_builtin_evaluators
        load_builtin_evaluators()
        names = ATTACKS.names()
        rec.put("attack_registry", {"methods": names,
                                    "autoattack": [n for n in names if n.startswith("autoattack")]})


# ----- 2. correctness: the cuda-marked tests ---------------------------------------------

PYTEST_LINE = re.compile(r"^(\S+::\S+?)\s+(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b(.*)$")
PYTEST_SUMMARY = re.compile(r"^(FAILED|ERROR|SKIPPED \[\d+\]) (\S+?)(?: - |: )(.*)$")
PYTEST_DURATION = re.compile(r"^([\d.]+)s (call|setup|teardown)\s+(\S+)$")


def cuda_test_files() -> list[Path]:
    """Test modules holding tests marked ``cuda`` (others are not even imported: on a device
    machine a test module may import a package that is missing there)."""
    return sorted(p for p in (REPO / "tests").glob("test_*.py")
                  if re.search(r"pytest\.mark\.cuda\b", p.read_text(errors="replace")))


def parse_pytest(text: str) -> dict:
    tests: dict[str, dict] = {}
    for line in text.splitlines():
        m = PYTEST_LINE.match(line.strip())
        if m and "::" in m.group(1):
            tests.setdefault(m.group(1), {})["outcome"] = m.group(2).lower()
            continue
        m = PYTEST_SUMMARY.match(line.strip())
        if m and m.group(2) in tests and m.group(1) in ("FAILED", "ERROR"):
            tests[m.group(2)]["message"] = m.group(3)[:500]
        m = PYTEST_DURATION.match(line.strip())
        if m and m.group(3) in tests:
            entry = tests[m.group(3)]
            entry["duration_s"] = round(entry.get("duration_s", 0.0) + float(m.group(1)), 2)
    counts: dict[str, int] = {}
    for entry in tests.values():
        counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
    skip_reasons = sorted({line.split(": ", 1)[-1] for line in text.splitlines() if line.startswith("SKIPPED [")})
    return {"counts": counts, "tests": tests, "skip_reasons": skip_reasons}


# in --smoke, on the CPU stand-in: all but these two, which take minutes there
SMOKE_DESELECT = "not compile and not killed"


def section_correctness(rec: Recorder, s: Settings) -> None:
    files = cuda_test_files()
    rec.put("test_files", [str(p.relative_to(REPO)) for p in files])
    if not files:
        raise SkipSection("no test module marks tests with pytest.mark.cuda")
    with rec.item("pytest_cuda"):
        # -o addopts=: the project's default options name plugins a device machine may lack
        cmd = [sys.executable, "-m", "pytest", "-o", "addopts=", "-m", "cuda", "-v", "-rA", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", "--durations=0", "--durations-min=0.5",
               *(str(p.relative_to(REPO)) for p in files)]
        env = child_env(s.smoke)
        env.pop("LPC_BENCH_CUDA_TESTS_DEVICE", None)   # on a GPU: on the GPU
        if s.smoke:
            # the test bodies run on the CPU (their device-vs-CPU comparisons then prove
            # nothing about CUDA, but the tests themselves cannot rot between leases)
            env["LPC_BENCH_CUDA_TESTS_DEVICE"] = "cpu"
            cmd += ["-k", SMOKE_DESELECT]
            rec.put("note", "smoke: the cuda tests ran on the CPU stand-in (LPC_BENCH_CUDA_TESTS_DEVICE=cpu), "
                            f"deselected: -k '{SMOKE_DESELECT}'")
        log = s.work / "logs" / "pytest_cuda.log"
        code, wall = run_process(cmd, log=log, timeout=check_time_left(rec, 10, "pytest -m cuda"), env=env)
        parsed = parse_pytest(log.read_text(errors="replace"))
        rec.put("pytest_cuda", {"command": " ".join(["python", *cmd[1:]]), "exit_code": code, "wall_s": wall,
                                "killed_at_cap": code is None, "log": s.rel(log), **parsed})
        failed = {k: v for k, v in parsed["tests"].items() if v["outcome"] in ("failed", "error")}
        if code is None:
            raise RuntimeError(f"pytest killed at the section's cap after {wall:.0f} s; "
                               f"{len(parsed['tests'])} test(s) had finished")
        if failed or code not in (0, 5):
            names = ", ".join(k.split("::")[-1] for k in failed) or f"exit code {code}"
            raise RuntimeError(f"{len(failed)} cuda test(s) failed: {names}\n{tail(log, 8)}")


# ----- 3. throughput ---------------------------------------------------------------------

THROUGHPUT_MODELS = (("resnet18", "cifar10", 10), ("resnet50", "cifar100", 100))
FULL_SIZES = {"batch": 128, "warmup": 5, "steps": 60, "pipeline_warmup": 10,
              "pipeline_images": {"resnet18": 50_000, "resnet50": 20_000}, "epoch_images": 45_000,
              "compile_backend": None, "compile_need_s": {"resnet18": 75, "resnet50": 110},
              "backbone_overrides": ()}
# smoke: the same path with a tiny CNN in each ResNet's place (a ResNet-50 step alone takes
# seconds on a shared CPU) and torch.compile without code generation
SMOKE_SIZES = {"batch": 8, "warmup": 1, "steps": 2, "pipeline_warmup": 1,
               "pipeline_images": {"resnet18": 24, "resnet50": 16}, "epoch_images": 45_000,
               "compile_backend": "eager", "compile_need_s": {"resnet18": 5, "resnet50": 5},
               "backbone_overrides": ("backbone.name=small_cnn", "backbone.channels=[8,16,16]")}


def section_throughput(rec: Recorder, s: Settings) -> None:
    import torch
    from bench.core.device import configure
    from bench_pipeline import (compare_pipelines, flops_per_image, measure_training_mode, pipeline_suite,
                                synthetic)
    device = section_device(s)
    sizes = SMOKE_SIZES if s.smoke else FULL_SIZES
    rec.put("sizes", {k: v for k, v in sizes.items() if k not in ("compile_need_s", "backbone_overrides")})
    peak = None
    with rec.item("bf16_matmul"):
        m = bf16_matmul_tflops(device, *((256, 3) if s.smoke else (8192, 50)))
        rec.put("bf16_matmul", m)
        peak = m["tflops"]
    sheet = datasheet_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    rec.put("datasheet_bf16_tflops", sheet)
    workers = 1 if s.smoke else min(8, os.cpu_count() or 1)
    plans = []   # (model key, suite) in the order measured; compiled modes last, if time is left
    for key, suite_name, classes in THROUGHPUT_MODELS:
        suite = pipeline_suite(suite_name, key, sizes["batch"], sizes["backbone_overrides"])
        n_mode = sizes["batch"] * (sizes["warmup"] + sizes["steps"])
        plans.append((key, suite, classes, synthetic(max(n_mode, sizes["batch"]), seed=0, num_classes=classes)))

    def anchor(key: str, img_per_s: float) -> dict:
        flops = rec.data["figures"].get(key, {}).get("flops_per_image")
        if not flops:
            return {}
        out = {"anchor_img_per_s_measured_peak": peak * 1e12 / flops if peak else None,
               "ratio_to_anchor_measured_peak": img_per_s * flops / (peak * 1e12) if peak else None}
        if sheet:
            out.update(anchor_img_per_s_datasheet=sheet * 1e12 / flops,
                       ratio_to_anchor_datasheet=img_per_s * flops / (sheet * 1e12))
        return out

    def mode(key, suite, data, name):
        with rec.item(f"{key}/modes/{name}"):
            if "compile" in name:
                rec.need(sizes["compile_need_s"][key], f"{key} with torch.compile")
            configure(suite.runtime, device)
            r = measure_training_mode(suite, data, device, name, batch_size=sizes["batch"], warmup=sizes["warmup"],
                                      steps=sizes["steps"], compile_backend=sizes["compile_backend"])
            r["epoch_s_45k"] = sizes["epoch_images"] / r["img_per_s"]
            # "fp32" convolutions run in TF32 where cuDNN allows it (PyTorch's default)
            r["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
            r.update(anchor(key, r["img_per_s"]))
            rec.put(f"{key}/modes/{name}", r)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    for key, suite, classes, data in plans:
        rec.put(f"{key}/num_classes", classes)
        rec.put(f"{key}/backbone", suite.backbone.name + ("" if suite.backbone.name.startswith("resnet")
                                                          else f" {list(suite.backbone.channels)} (smoke)"))
        with rec.item(f"{key}/flops_per_image"):
            flops = flops_per_image(suite, data, device)
            rec.put(f"{key}/flops_per_image", flops)
            rec.put(f"{key}/gmac_per_image", flops / 2e9)
        for name in ("fp32", "bf16_channels_last"):
            mode(key, suite, data, name)
        with rec.item(f"{key}/pipelines"):
            rec.need(10 if not s.smoke else 2, f"{key} pipelines")
            images = sizes["pipeline_images"][key]
            pdata = synthetic(images, seed=1, num_classes=classes)
            configure(suite.runtime, device)
            r = compare_pipelines(suite, pdata, device, batch_size=sizes["batch"], warmup=sizes["pipeline_warmup"],
                                  workers=workers)
            r["on_device"].update(anchor(key, r["on_device"]["img_per_s"]))
            rec.put(f"{key}/pipelines", r)
    for key, suite, _, data in plans:
        mode(key, suite, data, "bf16_channels_last_compile")
    rec.put("issue_anchor_resnet18_gmac", ISSUE_ANCHOR_RESNET18_GMAC)


# ----- 4. a short real run ---------------------------------------------------------------

REAL_SUITE = "cifar10-small"
REAL_PLUGINS = ("LPC", "NoPen")


def write_image_folder(root: Path, *, train_per_class: int, test_per_class: int, classes: int = 10,
                       size: int = 32, seed: int = 0) -> Path:
    """``root/{train,test}/c<k>/<i>.jpg``: a smooth random pattern per class plus pixel noise,
    so that a few epochs learn something; JPEG, as the CIFAR-10 folder is."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(classes, 4, 4, 3))
    patterns = np.kron(coarse, np.ones((size // 4, size // 4, 1)))        # blocky per-class pattern
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for k in range(classes):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image = 128 + 45 * patterns[k] + 30 * rng.normal(size=(size, size, 3))
                Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"{i:04d}.jpg", quality=92)
    return root


def available_evaluation(suite) -> tuple[list[str], list[str], list[str]]:
    """(evaluators, attack methods, what was dropped and why) for the packages installed here."""
    from bench.attacks.methods import get_attack
    attacks = dict(suite.evaluation.settings.get("attacks", {}))
    methods = list(attacks.get("methods", []))
    dropped = []
    library_module = {"torchattacks": "torchattacks", "foolbox": "foolbox"}
    kept = []
    for name in methods:
        module = library_module.get(get_attack(name).library)
        if module and importlib.util.find_spec(module) is None:
            dropped.append(f"attack {name} ({module} not installed)")
        else:
            kept.append(name)
    evaluators = list(suite.evaluation.evaluators)
    if methods and not kept and "attacks" in evaluators:
        evaluators.remove("attacks")
        dropped.append("evaluator attacks (none of its methods can run)")
    return evaluators, kept, dropped


def summarise_run(run_dir: Path) -> dict:
    """The figures of one finished run: status, accuracies, epoch times, each evaluator's scalars."""
    result = json.loads((run_dir / "result.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    out = {k: result.get(k) for k in ("status", "train_acc", "val_acc", "test_acc", "train_wall_s", "wall_s")}
    if result.get("failure"):
        out["failure"] = {k: result["failure"].get(k) for k in ("kind", "reason", "epoch")}
    out["epoch_time_s"] = [round(r.get("time_s", math.nan), 3) for r in rows]
    if rows:
        out["last_epoch"] = {k: v for k, v in rows[-1].items() if k.startswith("loss_") or k in ("gamma", "train_acc")}
    evaluations = {}
    for name, ev in (result.get("evaluations") or {}).items():
        if isinstance(ev, dict):
            evaluations[name] = {k: v for k, v in ev.items() if isinstance(v, (int, float, str, bool)) or v is None}
    out["evaluations"] = evaluations
    return out


def section_real_run(rec: Recorder, s: Settings) -> None:
    from bench.suites import load_suite
    work = s.work / "real_run"
    if work.exists():
        shutil.rmtree(work)
    (s.out / f"leaderboard-{REAL_SUITE}.md").unlink(missing_ok=True)
    if s.smoke:
        root = write_image_folder(work / "data", train_per_class=12, test_per_class=4)
        rec.put("data", {"root": str(root), "kind": "generated: 10 classes of 32×32 JPEGs, 12 train + 4 test each"})
        overrides = ["recipe.epochs=1", "recipe.batch_size=32", "backbone.channels=[8,8,8]",
                     "evaluation.subset_size=12",
                     "evaluation.settings.attacks.params.pgd-linf.steps=2",
                     "evaluation.settings.attacks.params.pgd-l2.steps=2",
                     "evaluation.settings.attacks.params.fmn-l2.steps=3",
                     "evaluation.settings.deepfool.max_iter=5"]
    else:
        root = s.data_root
        if not root.exists():
            raise SkipSection(f"no data folder at {root} (give the CIFAR-10 JPEGs with --data-root)")
        rec.put("data", {"root": str(root), "kind": "CIFAR-10 JPEG folder"})
        overrides = ["recipe.epochs=5"]
    env = child_env(s.smoke)
    if s.smoke:
        env["LPC_BENCH_CACHE"] = str(work / "cache")
    suite = load_suite(REAL_SUITE, [f"dataset.root={root}", *overrides])
    evaluators, methods, dropped = available_evaluation(suite)
    if evaluators != list(suite.evaluation.evaluators):
        overrides.append(f"evaluation.evaluators=[{','.join(evaluators)}]")
    if methods != list(suite.evaluation.settings.get("attacks", {}).get("methods", [])):
        overrides.append(f"evaluation.settings.attacks.methods=[{','.join(methods)}]")
    suite = load_suite(REAL_SUITE, [f"dataset.root={root}", *overrides])
    settings = io._jsonable(suite.evaluation.settings)
    attack_settings = settings.get("attacks", {})
    params = "; ".join(f"{k} {', '.join(f'{a} {b}' for a, b in v.items())}"
                       for k, v in attack_settings.get("params", {}).items())
    rec.put("evaluation", {"evaluators": list(suite.evaluation.evaluators),
                           "subset_size": suite.evaluation.subset_size, "settings": settings,
                           "budgets": f"reduced, as the {REAL_SUITE} suite sets them"
                                      + (" and smaller still for --smoke" if s.smoke else "")
                                      + f": attacks {', '.join(attack_settings.get('methods', []))}"
                                      + (f" ({params})" if params else "")
                                      + f" on {suite.evaluation.subset_size} test inputs (the paper: 1,000 "
                                        "inputs, the full attack list)",
                           "dropped": dropped})

    with rec.item("decode"):
        # decoded once into the cache (here, in this process), timed apart from the runs
        from bench.data import load_dataset
        if s.smoke:
            os.environ["LPC_BENCH_CACHE"] = env["LPC_BENCH_CACHE"]
        t0 = time.perf_counter()
        data = load_dataset(suite.dataset)
        rec.put("decode", {"wall_s": time.perf_counter() - t0, "train": list(data.train_x.shape),
                           "val": list(data.val_x.shape), "test": list(data.test_x.shape)})
        del data

    runs = work / "runs"
    with rec.item("bench_run"):
        cmd = [sys.executable, "-m", "bench", "run", "--suite", REAL_SUITE, "--data-root", str(root),
               "--plugins", *REAL_PLUGINS, "--out", str(runs), "--no-report", "--quiet",
               *(a for o in overrides for a in ("--set", o))]
        if s.smoke:
            cmd += ["--device", "cpu"]
        log = work / "bench_run.log"
        code, wall = run_process(cmd, log=log, timeout=check_time_left(rec, 20, "bench run"), env=env)
        entry = {"command": " ".join(["python", *cmd[1:]]), "exit_code": code, "wall_s": wall,
                 "killed_at_cap": code is None, "output_tail": tail(log, 12)}
        entry["runs"] = {p.parent.parent.name: summarise_run(p.parent)
                         for p in sorted(runs.rglob("result.json"))}
        rec.put("bench_run", entry)
        if code != 0:
            raise RuntimeError(f"bench run exited with {code}:\n{tail(log, 8)}")
        bad = [k for k, v in entry["runs"].items() if v["status"] != "done"]
        if bad or len(entry["runs"]) != len(REAL_PLUGINS):
            raise RuntimeError(f"runs not done: {bad or 'missing results'}")

    with rec.item("bench_report"):
        if not runs.exists():
            raise SkipItem("bench run wrote no runs")
        cmd = [sys.executable, "-m", "bench", "report", "--runs", str(runs), "--suite", REAL_SUITE,
               "--leaderboards", str(work / "leaderboards")]
        log = work / "bench_report.log"
        code, wall = run_process(cmd, log=log, timeout=check_time_left(rec, 5, "bench report"), env=env)
        board = work / "leaderboards" / f"{REAL_SUITE}.md"
        rec.put("bench_report", {"command": " ".join(["python", *cmd[1:]]), "exit_code": code, "wall_s": wall,
                                 "leaderboard": s.rel(board) if board.exists() else None,
                                 "output_tail": tail(log, 5)})
        if code != 0 or not board.exists():
            raise RuntimeError(f"bench report exited with {code}:\n{tail(log, 8)}")
        shutil.copyfile(board, s.out / f"leaderboard-{REAL_SUITE}.md")

    with rec.item("paper_estimate"):
        # the paper's CIFAR-10 recipe (ResNet-18, batch 128) on the same images: its
        # pre-sweep estimate builds the model and times real steps on this device
        cmd = [sys.executable, "-m", "bench", "run", "--suite", "cifar10", "--set", "dataset.name=imagefolder",
               "--data-root", str(root), "--plugins", "LPC", "--seeds", "0", "--estimate-only", "--quiet",
               "--out", str(work / "paper")]
        if s.smoke:  # the same path with a tiny CNN: a ResNet-18 probe takes long on a shared CPU
            cmd += ["--device", "cpu", "--set", "backbone.name=small_cnn", "--set", "backbone.channels=[8,8,8]",
                    # the paper's full AutoAttack on an untrained model takes minutes on a CPU
                    "--set", "evaluation.evaluators=[]", "--set", "evaluation.settings={}"]
        log = work / "paper_estimate.log"
        code, wall = run_process(cmd, log=log, timeout=check_time_left(rec, 10, "the paper suite's estimate"),
                                 env=env)
        rec.put("paper_estimate", {"command": " ".join(["python", *cmd[1:]]), "exit_code": code, "wall_s": wall,
                                   "output": tail(log, 6)})
        if code != 0:
            raise RuntimeError(f"exit code {code}:\n{tail(log, 8)}")


# ----- 5. attack speed -------------------------------------------------------------------

FULL_ATTACKS = {"models": {"cnn32": {"n": 500, "n_torchattacks": 64, "train_steps": 60, "batch": 128,
                                     "need_s": 15},
                           "resnet18": {"n": 256, "n_torchattacks": 16, "train_steps": 100, "batch": 128,
                                        "need_s": 25}},
                "repeats": 3, "autoattack_inputs": 100}
SMOKE_ATTACKS = {"models": {"cnn32": {"n": 8, "n_torchattacks": 4, "train_steps": 20, "batch": 16, "need_s": 5},
                            "resnet18": {"n": 3, "n_torchattacks": 2, "train_steps": 1, "batch": 4, "need_s": 5}},
                 "repeats": 1, "autoattack_inputs": 2}
TARGETS = {"foolbox": 3.0, "torchattacks": 100.0}
AUTOATTACK_EPS = {"L2": 0.5, "Linf": 8 / 255}


def section_attacks(rec: Recorder, s: Settings) -> None:
    import torch
    from bench_deepfool import MODELS, compare_deepfool
    from bench.attacks.deepfool import deepfool
    device = section_device(s)
    plan = SMOKE_ATTACKS if s.smoke else FULL_ATTACKS
    rec.put("targets", {f"speedup_vs_{k}": v for k, v in TARGETS.items()})
    trained = {}
    for name, size in plan["models"].items():
        with rec.item(name):
            rec.need(size["need_s"], f"DeepFool on {name}")
            model, x, y = MODELS[name](size["n"], device, train_steps=size["train_steps"], batch=size["batch"])
            trained[name] = (model, x, y)
            r = compare_deepfool(model, x, y, device, repeats=plan["repeats"], n_torchattacks=size["n_torchattacks"])
            for lib, target in TARGETS.items():
                if f"speedup_vs_{lib}" in r:
                    r[f"target_met_vs_{lib}"] = r[f"speedup_vs_{lib}"] >= target
            rec.put(name, r)
        with rec.item(f"{name}_tf32"):
            if name not in trained:
                raise SkipItem("no trained model")
            model, x, y = trained[name]
            model = model.to(device)
            before = torch.backends.cudnn.allow_tf32
            figures = {}
            try:
                for flag in (True, False):
                    torch.backends.cudnn.allow_tf32 = flag
                    sync(device)
                    t0 = time.perf_counter()
                    res = deepfool(model, x, y, device=device)
                    sync(device)
                    figures[flag] = (time.perf_counter() - t0, res)
            finally:
                torch.backends.cudnn.allow_tf32 = before
            (t_on, on), (t_off, off) = figures[True], figures[False]
            both = on.flipped & off.flipped
            rel = (on.rho[both] - off.rho[both]).abs() / off.rho[both]
            rec.put(f"{name}_tf32", {"time_s_tf32_on": t_on, "time_s_tf32_off": t_off,
                                     "same_status": float(sum(a == b for a, b in zip(on.status, off.status))
                                                          / len(on.status)),
                                     "n_both_flipped": int(both.sum()),
                                     "max_rel_rho_diff": float(rel.max()) if both.any() else None,
                                     "median_rel_rho_diff": float(rel.median()) if both.any() else None,
                                     "note": "cuDNN convolutions in TF32 (PyTorch's default) vs in float32"})
    with rec.item("autoattack"):
        from bench.attacks.library import AttackInfo
        from bench.attacks.methods import ATTACKS, attack_guard, seeded
        from bench.suites.imports import load_builtin_evaluators
        load_builtin_evaluators()
        names = [n for n in ATTACKS.names() if n.startswith("autoattack")]
        if not names:
            raise SkipItem("autoattack not registered")
        if "resnet18" not in trained:
            raise SkipItem("no trained ResNet-18")
        model, x, y = trained["resnet18"]
        model = model.to(device).eval()
        with torch.no_grad():
            keep = (model(x.to(device)).argmax(1).cpu() == y).nonzero().squeeze(1)
        k = plan["autoattack_inputs"]
        xs, ys = x[keep][:k], y[keep][:k]
        if xs.shape[0] == 0:
            raise SkipItem("no correctly classified input to attack")
        figures = {}
        for name in names:
            spec = ATTACKS.get(name)
            eps = AUTOATTACK_EPS[spec.norm] if spec.kind == "fixed_eps" else None
            info = AttackInfo(num_classes=10, seed=0, device=device)
            rec.need(10, name)
            sync(device)
            t0 = time.perf_counter()
            with attack_guard(model), seeded(0, device):
                adv = spec.run(model, xs.to(device), ys.to(device), eps, spec.options(), info)
            sync(device)
            seconds = time.perf_counter() - t0
            with torch.no_grad():
                fooled = int((model(adv.to(device).float()).argmax(1).cpu() != ys).sum())
            figures[name] = {"eps": eps, "n_inputs": int(xs.shape[0]), "seconds": seconds,
                             "seconds_per_1000_inputs": seconds / xs.shape[0] * 1000, "fooled": fooled}
            rec.put("autoattack", figures)


# ----- orchestration ---------------------------------------------------------------------

@dataclass(frozen=True)
class Section:
    name: str
    title: str
    cap_s: float
    smoke_cap_s: float
    run: Callable[[Recorder, Settings], None]


SECTIONS = (
    Section("environment", "1. Environment", 20, 90, section_environment),
    Section("correctness", "2. Correctness on CUDA", 120, 90, section_correctness),
    Section("throughput", "3. Throughput", 140, 90, section_throughput),
    Section("real_run", "4. A short real run", 130, 90, section_real_run),
    Section("attacks", "5. Attack speed", 60, 90, section_attacks),
)
BY_NAME = {sec.name: sec for sec in SECTIONS}


def child_main(args) -> int:
    """Run one section in this process (started by :func:`main`)."""
    s = Settings(out=Path(args.out), smoke=args.smoke, data_root=Path(args.data_root),
                 work=Path(args.work_dir or Path(args.out) / WORK))
    if s.smoke:
        import torch
        torch.set_num_threads(1)
    rec = Recorder(s.work / "sections" / f"{args.section}.json", args.deadline)
    try:
        BY_NAME[args.section].run(rec, s)
    except SkipSection as exc:
        rec.data["skip_reason"] = str(exc)
    except Exception as exc:  # the section's own code broke: recorded, the next section still runs
        rec.data["errors"]["section"] = f"{type(exc).__name__}: {exc}"[:2000]
        traceback.print_exc()
    rec.flush()
    return 0


def section_status(data: dict, code: int | None) -> str:
    if code is None:
        return "timeout"
    if data.get("skip_reason"):
        return "skipped"
    if data.get("errors") or code != 0:
        return "partial" if data.get("figures") else "error"
    return "ok"


def run_section(sec: Section, s: Settings, cap: float) -> dict:
    path = s.work / "sections" / f"{sec.name}.json"
    path.unlink(missing_ok=True)
    log = s.work / "logs" / f"{sec.name}.log"
    deadline = time.time() + cap - 3.0   # the child stops its own subprocesses a little before
    cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(s.out), "--data-root", str(s.data_root),
           "--work-dir", str(s.work), "--section", sec.name, "--deadline", repr(deadline),
           *(["--smoke"] if s.smoke else [])]
    cpu_before = children_cpu_s()
    code, wall = run_process(cmd, log=log, timeout=cap, env=child_env(s.smoke))
    cpu = children_cpu_s() - cpu_before
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {"figures": {}, "errors": {}, "skipped": {}}
    errors = dict(data.get("errors") or {})
    if code is None:
        errors["section"] = f"killed at its cap of {cap:.0f} s; figures up to then are kept"
    elif code != 0 and "section" not in errors:
        errors["section"] = f"the section's process exited with {code}:\n{tail(log, 10)}"
    entry = {"title": sec.title, "status": section_status(data, code), "wall_s": round(wall, 2),
             "cpu_s": round(cpu, 2), "cap_s": round(cap, 1), "figures": data.get("figures") or {}, "errors": errors,
             "skipped": data.get("skipped") or {}, "log": s.rel(log)}
    if data.get("skip_reason"):
        entry["reason"] = data["skip_reason"]
    return entry


def write_outputs(s: Settings, report: dict) -> None:
    write_json(s.out / "gpu_check.json", report)
    io.atomic_write_text(s.out / "gpu_check.md", render_markdown(report))
    write_log_archive(s)


def write_log_archive(s: Settings) -> None:
    """DIR/gpu_check_logs.tar.gz: every section's log and JSON, the subprocesses' logs (small;
    one file to bring back from a machine that returns only a few)."""
    import tarfile
    tmp = s.out / ".gpu_check_logs.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted([*s.work.glob("logs/*.log"), *s.work.glob("sections/*.json"),
                            *s.work.glob("real_run/*.log")]):
            tar.add(path, arcname=s.rel(path))
    os.replace(tmp, s.out / "gpu_check_logs.tar.gz")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for gpu_check.json, gpu_check.md and work files")
    p.add_argument("--smoke", action="store_true", help="every section at tiny sizes on the CPU (≤ 2 minutes)")
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT),
                   help=f"the CIFAR-10 JPEG folder for the real run (default: {DEFAULT_DATA_ROOT})")
    p.add_argument("--work-dir", help="folder for runs, logs and generated data (default: DIR/work)")
    p.add_argument("--sections", nargs="+", choices=list(BY_NAME), default=list(BY_NAME),
                   help="run only these sections (default: all)")
    p.add_argument("--budget-s", type=float, help=f"total time cap (default {FULL_BUDGET_S:.0f}; "
                                                   f"{SMOKE_BUDGET_S:.0f} with --smoke)")
    p.add_argument("--section", help=argparse.SUPPRESS)          # internal: run one section here
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.section:
        return child_main(args)

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"error: --out {out} exists and is not a folder", file=sys.stderr)
        return 2
    import torch
    if not args.smoke and not torch.cuda.is_available():
        print("error: no CUDA device here: the GPU check needs one (use --smoke for the CPU smoke run)",
              file=sys.stderr)
        return 2
    budget = args.budget_s or (SMOKE_BUDGET_S if args.smoke else FULL_BUDGET_S)
    s = Settings(out=out.resolve(), smoke=args.smoke, data_root=Path(args.data_root).resolve(),
                 work=Path(args.work_dir).resolve() if args.work_dir else out.resolve() / WORK)
    s.out.mkdir(parents=True, exist_ok=True)
    s.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    report = {"schema": SCHEMA, "mode": "smoke" if args.smoke else "full",
              "command": " ".join(["python", "benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "budget_s": budget,
              "host": platform.node(), "sections": {}}
    chosen = [sec for sec in SECTIONS if sec.name in args.sections]
    own_cap = {sec.name: sec.smoke_cap_s if args.smoke else sec.cap_s for sec in chosen}
    for i, sec in enumerate(chosen):
        left = budget - (time.time() - started)
        # a section may use the time earlier ones left unused, never the caps of later ones
        later = sum(own_cap[other.name] for other in chosen[i + 1:])
        cap = min(max(own_cap[sec.name], left - later), left)
        if cap < 5:
            report["sections"][sec.name] = {"title": sec.title, "status": "skipped", "wall_s": 0.0, "cap_s": 0.0,
                                            "figures": {}, "errors": {}, "skipped": {},
                                            "reason": f"the budget of {budget:.0f} s was used up"}
        else:
            report["sections"][sec.name] = run_section(sec, s, cap)
        entry = report["sections"][sec.name]
        report["wall_s"] = round(time.time() - started, 2)
        write_outputs(s, report)
        print(f"{sec.name:12s} {entry['status']:8s} {entry['wall_s']:7.1f} s  (CPU {entry.get('cpu_s', 0):.1f} s)"
              + "".join(f"\n  error {k}: {v.splitlines()[0]}" for k, v in entry["errors"].items())
              + (f"\n  skipped: {entry['reason']}" if entry.get("reason") else ""), flush=True)
    report["wall_s"] = round(time.time() - started, 2)
    write_outputs(s, report)
    print(f"wrote {s.out / 'gpu_check.json'} and {s.out / 'gpu_check.md'} ({report['wall_s']:.0f} s)")
    bad = [n for n, e in report["sections"].items() if e["status"] not in ("ok", "skipped")]
    return 1 if bad else 0


# ----- the Markdown report ---------------------------------------------------------------

def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0 or not math.isfinite(v):
            return str(v)
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _md_environment(f: dict) -> list[str]:
    env = f.get("environment", {})
    rows = [[k, v] for k, v in env.items()]
    if "driver" in f:
        rows.append(["nvidia-smi", f["driver"]])
    if "bf16_matmul" in f:
        m = f["bf16_matmul"]
        rows.append(["bf16 matmul", f"{m['tflops']:.1f} TFLOP/s ({m['n']}³, mean of {m['reps']})"])
    if f.get("missing_packages") is not None:
        rows.append(["missing packages", ", ".join(f["missing_packages"]) or "none"])
    if "attack_registry" in f:
        rows.append(["AutoAttack methods", ", ".join(f["attack_registry"]["autoattack"]) or "not registered"])
    return _table(["", "value"], rows)


def _md_correctness(f: dict) -> list[str]:
    r = f.get("pytest_cuda")
    if not r:
        return []
    lines = [f"`{r['command']}`: exit {r['exit_code']}, {r['wall_s']:.1f} s; "
             + ", ".join(f"{n} {k}" for k, n in sorted(r["counts"].items())), ""]
    lines += _table(["test", "outcome", "s", "message"],
                    [[k.split("::")[-1], v["outcome"], v.get("duration_s"), v.get("message", "")]
                     for k, v in r["tests"].items()])
    if r.get("skip_reasons"):
        lines += ["Skip reasons: " + "; ".join(r["skip_reasons"]), ""]
    if f.get("note"):
        lines += [f["note"], ""]
    return lines


def _md_throughput(f: dict) -> list[str]:
    lines = []
    if "bf16_matmul" in f:
        lines += [f"Measured bf16 matmul: {f['bf16_matmul']['tflops']:.1f} TFLOP/s; datasheet: "
                  f"{_fmt(f.get('datasheet_bf16_tflops'))} TFLOP/s. Anchor = peak ÷ FLOPs per training image "
                  f"(forward + backward, torch's counter, 2 FLOPs per multiply-add; the issue's ≈ "
                  f"{ISSUE_ANCHOR_RESNET18_GMAC} for ResNet-18 counts multiply-adds).", ""]
    rows = []
    for key, _, _ in THROUGHPUT_MODELS:
        modes = f.get(key, {}).get("modes", {})
        for mode in sorted(modes, key=lambda name: list(TRAINING_MODES).index(name)):
            r = modes[mode]
            rows.append([key, mode, r["img_per_s"], r["step_ms"], r["epoch_s_45k"], r["warmup_s"],
                         r.get("ratio_to_anchor_measured_peak"), r.get("ratio_to_anchor_datasheet")])
    if rows:
        lines += _table(["model", "mode", "img/s", "ms/step", "epoch s (45k)", "warm-up s", "÷ anchor (measured)",
                         "÷ anchor (datasheet)"], rows)
    rows = []
    for key, _, _ in THROUGHPUT_MODELS:
        m = f.get(key, {})
        if "flops_per_image" in m:
            rows.append([key, m.get("backbone"), m.get("num_classes"), m["flops_per_image"] / 1e9, m["gmac_per_image"]])
    if rows:
        lines += _table(["model", "backbone", "classes", "GFLOP/img (fwd+bwd)", "GMAC/img"], rows)
    rows = []
    for key, _, _ in THROUGHPUT_MODELS:
        pl = f.get(key, {}).get("pipelines")
        if pl:
            for side in ("on_device", "dataloader"):
                r = pl[side]
                rows.append([key, r["pipeline"], r["model"], pl["images"], r["epoch_s"], r["img_per_s"]])
            rows.append([key, "ratio DataLoader ÷ on-device epoch", "", "", pl["ratio_dataloader_over_device"], ""])
    if rows:
        lines += _table(["model", "pipeline", "precision", "images", "epoch s", "img/s"], rows)
    return lines


def _md_real_run(f: dict) -> list[str]:
    lines = []
    if "data" in f:
        lines += [f"Data: {f['data']['kind']} at `{f['data']['root']}`.", ""]
    if "evaluation" in f:
        ev = f["evaluation"]
        lines += [f"Evaluators: {', '.join(ev['evaluators'])}; attack subset {ev['subset_size']}; "
                  f"{ev['budgets']}." + (f" Dropped: {'; '.join(ev['dropped'])}." if ev["dropped"] else ""), ""]
    if "decode" in f:
        lines += [f"Decoding (or reading the decode cache): {f['decode']['wall_s']:.1f} s.", ""]
    run = f.get("bench_run")
    if run:
        lines += [f"`{run['command']}`: exit {run['exit_code']}, {run['wall_s']:.1f} s.", ""]
        rows = []
        for plugin, r in run["runs"].items():
            ev = r.get("evaluations", {})
            rows.append([plugin, r["status"], r.get("test_acc"), r.get("train_wall_s"), r.get("wall_s"),
                         sum(x for x in r.get("epoch_time_s", []) if isinstance(x, float)),
                         ev.get("deepfool", {}).get("rho_median"), ev.get("deepfool", {}).get("wall_s"),
                         ev.get("attacks", {}).get("clean_accuracy")])
        lines += _table(["plugin", "status", "test acc", "train s", "total s", "epochs s", "DeepFool median ρ",
                         "DeepFool s", "attacks clean acc"], rows)
    if "bench_report" in f:
        r = f["bench_report"]
        lines += [f"`{r['command']}`: exit {r['exit_code']}, {r['wall_s']:.1f} s → `{r['leaderboard']}`.", ""]
    if "paper_estimate" in f:
        r = f["paper_estimate"]
        lines += [f"`{r['command']}`: exit {r['exit_code']}, {r['wall_s']:.1f} s:", "", "```", r["output"], "```", ""]
    return lines


def _md_attacks(f: dict) -> list[str]:
    lines = []
    for name in FULL_ATTACKS["models"]:
        r = f.get(name)
        if not r:
            continue
        lines += [f"**{name}**: {r['n_inputs']} inputs {tuple(r['input_shape'])}, {r['n_correct']} correct, "
                  f"{r['steps']} steps, overshoot {r['overshoot']}, all classes, median of {r['repeats']}.", ""]
        lines += _table(["method", "inputs", "s", "s / input", "flipped", "mean ρ (own)", "mean ρ (all flipped)"],
                        [[k, m["n_inputs"], m["time_s"], m["time_per_input_s"], m["flipped"],
                          m["mean_rho_own_flipped"], m["mean_rho_flipped_by_all"]] for k, m in r["methods"].items()])
        for lib, target in TARGETS.items():
            if f"speedup_vs_{lib}" in r:
                agree = r[f"ours_vs_{lib}"]
                lines.append(f"- vs {lib}: {r[f'speedup_vs_{lib}']:.1f}× per input (target ≥ {target:g}×: "
                             f"{'met' if r[f'target_met_vs_{lib}'] else 'NOT met'}); same verdict on "
                             f"{agree['same_verdict']:.1%}; relative ρ difference median "
                             f"{_fmt(agree['median_rel_rho_diff'])}, max {_fmt(agree['max_rel_rho_diff'])} over "
                             f"{agree['n_both_flipped']} inputs both flipped")
        for lib, why in r.get("skipped", {}).items():
            lines.append(f"- {lib}: skipped, {why}")
        t = f.get(f"{name}_tf32")
        if t:
            lines.append(f"- cuDNN TF32 on vs off: {t['time_s_tf32_on']:.3f} s vs {t['time_s_tf32_off']:.3f} s; "
                         f"same status {t['same_status']:.1%}; relative ρ difference median "
                         f"{_fmt(t['median_rel_rho_diff'])}, max {_fmt(t['max_rel_rho_diff'])}")
        lines.append("")
    if "autoattack" in f:
        lines += _table(["AutoAttack", "ε", "inputs", "s", "s per 1,000 inputs", "fooled"],
                        [[k, v["eps"], v["n_inputs"], v["seconds"], v["seconds_per_1000_inputs"], v["fooled"]]
                         for k, v in f["autoattack"].items()])
    return lines


RENDERERS = {"environment": _md_environment, "correctness": _md_correctness, "throughput": _md_throughput,
             "real_run": _md_real_run, "attacks": _md_attacks}


def render_markdown(report: dict) -> str:
    lines = [f"# GPU check ({report['mode']})", "",
             f"`{report['command']}` on {report.get('host')}, started {report['started']}, "
             f"{_fmt(report.get('wall_s'))} s of a {report['budget_s']:.0f} s budget.", ""]
    if report["mode"] == "smoke":
        lines += ["Smoke run: every section at tiny sizes on the CPU (tiny CNNs in the ResNets' places in the "
                  "throughput section). The figures prove the script's path, not the speed or accuracy of "
                  "anything.", ""]
    lines += _table(["section", "status", "s", "CPU s", "cap s"],
                    [[e["title"], e["status"], e["wall_s"], e.get("cpu_s"), e["cap_s"]]
                     for e in report["sections"].values()])
    for name, e in report["sections"].items():
        lines += [f"## {e['title']}: {e['status']}", ""]
        if e.get("reason"):
            lines += [f"Skipped: {e['reason']}", ""]
        try:
            lines += RENDERERS[name](e["figures"])
        except Exception as exc:  # a figure missing from a broken section: show the raw figures
            lines += [f"(summary not available: {type(exc).__name__}: {exc})", "", "```json",
                      json.dumps(e["figures"], indent=1, default=str)[:6000], "```", ""]
        for key, why in e["skipped"].items():
            lines.append(f"- skipped {key}: {why}")
        for key, msg in e["errors"].items():
            lines += [f"- **error** {key}:", "", "```", msg, "```"]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
