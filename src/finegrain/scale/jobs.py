"""Batch jobs on Ray Data: `predict_on_ray` and `embed_on_ray`, the `--engine ray` of `finegrain predict` and
`finegrain embed`. Same rows as the in-process engine; written as Parquet shards that a rerun resumes."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..data.images import DEFAULT_MAX_PIXELS
from ..errors import ConfigError
from .cluster import check_cpu_budget, import_ray, job_failed, ray_session
from .inputs import Row, data_rows, input_rows, is_uri
from .shards import claim_output, done_inputs, drop_incomplete_shards, read_shards
from .stages import Embedder, Predictor, decode_and_crop, read_and_hash

SHARDS_FORMAT = "finegrain-shards/1"
# Memory each read/decode task reserves: room for one photo at the default pixel limit (89 Mpx ≈ 270 MB as RGB)
# and its crops. Reserving it also keeps Ray Data from fusing these tasks into the model actors (their resource
# requests differ), so the next batches decode in tasks, spread over the nodes, while the network runs.
DECODE_MEMORY = 512 * 2**20
# Writing a shard waits on storage, not on a core: a small share lets shards be written while the actors and
# decode tasks hold the CPUs, instead of all at the end (when a killed job would lose them all).
WRITE_CPUS = 0.25


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a job runs. `cpus` sizes a local Ray (ignored with `address`); each of the `actors`
    model actors holds one model and runs it on `threads` threads (and asks Ray for as many CPUs)."""

    address: str | None = None
    cpus: int | None = None
    actors: int = 1
    threads: int = 1
    batch_size: int = 32
    shard_rows: int = 1024
    runtime: str | None = None
    cache_dir: Path | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    quiet: bool = False


@dataclass(frozen=True)
class JobResult:
    """What a run did: inputs listed, rows this run wrote (the rest were already in the output), and the
    output's totals; `first_error` is (path, reason) of one unreadable input, if any."""

    out: str
    n_inputs: int
    n_new: int
    n_rows: int
    n_errors: int
    first_error: tuple[str, str] | None

    @property
    def n_skipped(self) -> int:
        return max(0, self.n_inputs - self.n_new)

    @property
    def none_readable(self) -> bool:
        return self.n_rows > 0 and self.n_errors == self.n_rows


def predict_on_ray(model_dir: str | Path, inputs: Sequence[str], out: str, options: RayOptions = RayOptions(),
                   *, top_k: int = 5, unknown: str | float | None = None) -> JobResult:
    """Top-k predictions of `inputs` (files, folders, manifests; local or URIs) into Parquet shards in `out`:
    path, sha256, label, labels, probs, error (+ unknown, known_score with `unknown`)."""
    from ..pipeline import Classifier
    from ..provenance import class_list_hash

    import_ray()  # before any work: a missing extra is the first thing to say
    if top_k < 1:
        raise ConfigError("--top-k must be at least 1", expected="an integer ≥ 1", found=str(top_k), fix="use e.g. --top-k 5")
    clf = Classifier.load(model_dir)
    backbone = clf.backbone()
    job = {"format": SHARDS_FORMAT, "task": "predict", "backbone": clf.backbone_id, "cache_key": clf.cache_key,
           "classes": class_list_hash(clf.classes), "top_k": min(top_k, len(clf.classes)), "unknown": unknown}
    actor_kwargs = {"model_files": folder_files(Path(model_dir).expanduser()), "top_k": top_k, "unknown": unknown}
    return _run(input_rows(inputs), out, job, backbone, Predictor, actor_kwargs, options)


def embed_on_ray(data: str, out: str, backbone_id: str, options: RayOptions = RayOptions(),
                 *, splits: Sequence[str] | None = None) -> JobResult:
    """L2-normalised embeddings of DATA (any layout `finegrain embed` reads, or a URI folder/manifest) into
    Parquet shards in `out`: path, sha256, label, split, embedding, error."""
    from ..backbones import get_backbone

    import_ray()
    backbone = get_backbone(backbone_id)
    job = {"format": SHARDS_FORMAT, "task": "embed", "backbone": backbone.id, "cache_key": backbone.cache_key}
    return _run(data_rows(data, splits), out, job, backbone, Embedder, {"backbone_id": backbone_id}, options)


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file of a model folder by relative path: shipped to the actors, which load it with the same
    validating loader as here (a cluster's workers need not see the driver's disk)."""
    if not folder.is_dir():
        raise ConfigError(f"model folder {folder} not found", expected="the folder written by `finegrain fit`",
                          found="no such folder", fix="check the MODEL path")
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def exported_networks(backbone: Any, runtime: str | None, cache_dir: Path | None) -> dict[str, bytes]:
    """The ONNX exports the actors will run, exported and checked against PyTorch once, here, rather than
    once per actor; keyed by the file name `resolve_runtime` looks for."""
    from ..backbones.onnx_runtime import OnnxBackbone, default_runtime, resolve_runtime
    from ..embed import members_of
    from ..store import default_cache_dir

    onnx_dir = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "onnx"
    runners = [resolve_runtime(m, runtime or default_runtime(), onnx_dir) for m in members_of(backbone)]
    return {r.model_path.name: r.model_path.read_bytes() for r in runners if isinstance(r, OnnxBackbone)}


def _run(rows: list[Row], out: str, job: dict[str, Any], backbone: Any, actor: type,
         actor_kwargs: dict[str, Any], options: RayOptions) -> JobResult:
    """Claim `out`, skip what it already holds, run the pipeline, and report the output's totals."""
    from ..backbones.onnx_runtime import default_runtime
    from ..embed import member_preprocesses

    out = out if is_uri(out) else str(Path(out).expanduser().resolve())
    claim_output(out, job)
    drop_incomplete_shards(out)
    n_before = _count_rows(out)
    runtime = options.runtime or default_runtime()
    actor_kwargs = {**actor_kwargs, "onnx_files": exported_networks(backbone, runtime, options.cache_dir),
                    "runtime": runtime, "threads": options.threads}
    with ray_session(options.address, options.cpus, options.quiet) as ray:
        check_cpu_budget(ray, options.actors, options.threads)
        ray.data.DataContext.get_current().enable_progress_bars = not options.quiet
        ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / options.shard_rows)))
        ds = ds.map_batches(read_and_hash, fn_kwargs={"done": done_inputs(out)},
                            batch_format="numpy", batch_size=None, num_cpus=1, memory=DECODE_MEMORY)
        ds = ds.map_batches(decode_and_crop, fn_kwargs={"preprocesses": member_preprocesses(backbone),
                                                        "max_pixels": options.max_pixels},
                            batch_format="numpy", batch_size=options.batch_size, num_cpus=1, memory=DECODE_MEMORY)
        ds = ds.map_batches(actor, fn_constructor_kwargs=actor_kwargs, compute=ray.data.ActorPoolStrategy(size=options.actors),
                            num_cpus=options.threads, batch_size=options.batch_size, batch_format="numpy")
        try:
            ds.write_parquet(out, ray_remote_args={"num_cpus": WRITE_CPUS})
        except ray.exceptions.RayError as exc:
            raise job_failed(exc) from exc
    return _result(out, len(rows), n_before)


def _count_rows(out: str) -> int:
    table = read_shards(out, ["sha256"])
    return 0 if table is None else table.num_rows


def _result(out: str, n_inputs: int, n_before: int) -> JobResult:
    table = read_shards(out, ["path", "error"])
    if table is None:
        return JobResult(out, n_inputs, 0, 0, 0, None)
    errors = [(p, e) for p, e in zip(table.column("path").to_pylist(), table.column("error").to_pylist()) if e]
    return JobResult(out, n_inputs, table.num_rows - n_before, table.num_rows, len(errors),
                     errors[0] if errors else None)
