"""`finegrain finetune --engine ray`: the fine-tuning epochs as a Ray Train job, data-parallel over N workers.

The driver fills the activation store (as the local engine does), starts the classifier with the linear probe
and commits that start as the epoch-0 checkpoint of the run folder. Every worker loads the run folder's last
checkpoint, trains its share of each global batch through DistributedDataParallel (gloo on CPUs, NCCL on
GPUs), and rank 0 validates and commits each epoch's checkpoint, from which the driver then reads the kept
weights. Only the settings, the image lists, the initial network and file paths travel: the activation store
and the run folder (both in the cache folder) must be at the same path on every node — a shared filesystem on
a cluster. A killed job is resumed by rerunning it, from the last epoch rank 0 committed.
"""
from __future__ import annotations

import copy
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, FinegrainError, MissingExtraError
from ..finetune.store import ActivationStore
from ..finetune.trainer import CHECKPOINT, Batches, Trainer
from .cluster import check_reachable, first_line, import_ray, ray_session

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class RayTrainOptions:
    """Where and how wide fine-tuning runs: `workers` data-parallel ranks of `threads` torch threads each
    (default: the local Ray's CPUs — the thread budget, one per core — or the cluster's, shared between them)."""

    address: str | None = None
    workers: int = 2
    threads: int | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        for name, value in (("--ray-workers", self.workers), ("--threads", self.threads)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} {value} is out of range", expected="a whole number ≥ 1", found=str(value),
                                  fix=f"pass {name} 2, or leave the default")


def engine_options(engine: str, ray: RayTrainOptions | None) -> RayTrainOptions | None:
    """The Ray options a `finetune(engine=...)` call runs with: None for the local engine. A missing Ray or an
    address nothing listens on is said now, not after the activations are computed."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown fine-tuning engine {engine!r}", expected=" or ".join(ENGINES), found=repr(engine),
                          fix="use engine='local' (this process) or engine='ray' (Ray Train workers)")
    if engine == "local" and ray is not None:
        raise ConfigError("Ray options given for a local fine-tuning run", expected="engine='ray' with them",
                          found="engine='local'", fix="pass engine='ray', or drop the Ray options")
    if engine == "local":
        return None
    import_ray_train()
    ray = ray or RayTrainOptions()
    if ray.address:
        check_reachable(ray.address)
    return ray


def import_ray_train() -> None:
    """Ray with Ray Train's PyTorch support, or a MissingExtraError that says what to install."""
    import_ray()
    try:
        import ray.train.torch  # noqa: F401 - needs torch and Ray Train's own dependencies
    except ImportError as exc:
        raise MissingExtraError("ray[train]", "finegrain finetune --engine ray", "ray") from exc


def fit_on_ray(trainer: Trainer, train: Batches, val: Batches | None,
               options: RayTrainOptions) -> dict[str, torch.Tensor]:
    """`trainer.fit` with the epochs run by Ray Train workers; returns the kept weights, read from the run
    folder's last checkpoint (and leaves `trainer` with that checkpoint's history and best epoch)."""
    import_ray_train()  # a missing extra is the first thing to say
    if not trainer.start(train):
        trainer.save_checkpoint()  # epoch 0: the probed start that every rank loads
    if trainer.epoch < trainer.s.epochs:
        _run_workers(trainer, train, val, options)
        if not trainer.resume(announce=False) or trainer.epoch < trainer.s.epochs:
            raise FinegrainError("the Ray workers finished, but the run folder holds no final checkpoint",
                                 expected=f"epoch {trainer.s.epochs} committed in {trainer.run_dir}",
                                 found=f"epoch {trainer.epoch}", fix=SHARED_FOLDER_FIX)
    return trainer.kept_state()


SHARED_FOLDER_FIX = ("put the cache folder on a filesystem every Ray node mounts at the same path (NFS, EFS, "
                     "Filestore, a hostPath or PVC on Kubernetes) and pass it as --cache-dir or FINEGRAIN_CACHE_DIR")


def _run_workers(trainer: Trainer, train: Batches, val: Batches | None, options: RayTrainOptions) -> None:
    from ..threads import thread_budget

    local_cpus = max(thread_budget(), options.workers * (options.threads or 1))
    with ray_session(options.address, None if options.address else local_cpus, options.quiet) as ray:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        cpus = float(ray.cluster_resources().get("CPU", 0))
        threads = options.threads or default_threads(cpus, largest_node_cpus(ray), options.workers)
        if options.address is None:
            check_cpu_budget(cpus, options.workers, threads)
        use_gpu = wants_gpu(trainer.s.device, float(ray.cluster_resources().get("GPU", 0)), options.workers)
        config = {"top": copy.deepcopy(trainer.top).cpu(), "settings": trainer.s, "store": str(trainer.store.directory),
                  "run_dir": str(trainer.run_dir), "train": train, "val": val, "threads": threads,
                  "progress": trainer.progress, "use_gpu": use_gpu}
        job = TorchTrainer(train_worker, train_loop_config=config,
                           scaling_config=ScalingConfig(num_workers=options.workers, use_gpu=use_gpu,
                                                        resources_per_worker={"CPU": threads}),
                           torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
                           run_config=RunConfig(name=f"finegrain-finetune-{trainer.run_dir.name}",
                                                storage_path=str(trainer.run_dir.resolve() / "ray-train")))
        if trainer.progress:
            print(f"fine-tuning on {options.workers} Ray Train worker(s) × {threads} thread(s)"
                  f"{' and 1 GPU' if use_gpu else ''}, from epoch {trainer.epoch}", file=sys.stderr)
        try:
            job.fit()
        except Exception as exc:  # noqa: BLE001 - Ray wraps every worker failure (WorkerGroupError, actor deaths)
            raise training_failed(exc) from exc


def largest_node_cpus(ray: Any) -> float:
    return max((float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=0.0)


def default_threads(cpus: float, node_cpus: float, workers: int) -> int:
    """An equal share of the cluster's CPUs, but no more than one node has: a worker asking for more would
    never be placed, and Ray Train would wait for it forever."""
    return max(1, min(int(cpus) // workers, int(node_cpus)))


def check_cpu_budget(cpus: float, workers: int, threads: int) -> None:
    """Refuse workers that a local Ray cannot place: Ray Train would wait for them forever."""
    if workers * threads > cpus:
        raise ConfigError(f"{workers} Ray Train worker(s) × {threads} thread(s) need more CPUs than Ray has",
                          expected=f"at most {cpus:g} CPUs", found=f"{workers * threads}",
                          fix="lower --ray-workers or --threads, or join a larger cluster with --ray-address")


def wants_gpu(device: str, gpus: float, workers: int) -> bool:
    """One GPU per worker when the cluster has one for each (device auto) or when asked (device cuda)."""
    if device == "cuda" and gpus < workers:
        raise ConfigError("--device cuda with --engine ray needs a GPU for every Ray Train worker",
                          expected=f"{workers} GPU(s) in the Ray cluster", found=f"{gpus:g}",
                          fix="lower --ray-workers, add GPU nodes, or use --device auto/cpu")
    return device != "cpu" and gpus >= workers


def train_worker(config: dict[str, Any]) -> None:
    """One rank: the Trainer of one process, its training steps through DistributedDataParallel."""
    import ray.train
    import ray.train.torch
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(config["threads"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    store_dir, run_dir = Path(config["store"]), Path(config["run_dir"])
    check_shared_folders(store_dir, run_dir)
    if config["use_gpu"]:
        torch.cuda.set_device(ray.train.torch.get_device())
    trainer = Trainer(config["top"], ActivationStore(store_dir), config["settings"], run_dir,
                      progress=config["progress"] and rank == 0, rank=rank, world=world)
    device_ids = [trainer.device.index or torch.cuda.current_device()] if trainer.device.type == "cuda" else None
    trainer.bars = False
    trainer.forward_module = DistributedDataParallel(trainer.top, device_ids=device_ids)
    trainer.fit(config["train"], config["val"])


def check_shared_folders(store_dir: Path, run_dir: Path) -> None:
    """A worker on a node that does not share the driver's cache folder would train on nothing: say so."""
    if not (run_dir / CHECKPOINT).is_file() or not any(store_dir.glob("chunk-*.json")):
        raise FinegrainError(f"the Ray worker on {socket.gethostname()} cannot see the fine-tuning files",
                             expected=f"the activation store {store_dir} and the run folder {run_dir} at the same "
                                      "path as on the driver", found="not there", fix=SHARED_FOLDER_FIX)


EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Interrupt)\b:?")
DETAILS = ("expected:", "found:", "fix:")


def training_failed(exc: BaseException) -> FinegrainError:
    """A failed Ray Train job as one error naming the workers' own exception, not Ray's wrapper."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [i for i, line in enumerate(lines) if EXCEPTION_LINE.match(line)]
    if causes:  # the last exception line, and a FinegrainError's expected/found/fix lines under it
        told = lines[causes[-1] + 1:]
        details = told[:next((i for i, line in enumerate(told) if not line.startswith(DETAILS)), len(told))]
        found = " ".join([lines[causes[-1]], *details])
    else:
        found = first_line(exc)
    return FinegrainError("the Ray fine-tuning job failed", expected="every worker training to the last epoch",
                          found=found, fix="fix the cause, then rerun the same command: it resumes from the last "
                                           "epoch's checkpoint")
