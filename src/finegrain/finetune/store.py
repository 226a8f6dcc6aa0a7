"""The trunk-activation store: frozen-trunk outputs of every stored view, computed once, kept on disk as float16.

Keyed like the embedding cache — file content (SHA-256) + backbone weights and preprocessing + the stage
where the trunk stops + the view recipe — so a second `finetune` over the same images computes nothing, and a
changed recipe never reuses old activations. Rows are appended in chunks: each chunk's array is written and
renamed into place before its index file, which is what commits it, so a run killed at any moment resumes
from the last committed chunk and never reads a half-written one. Chunks are memory-mapped: memory stays
flat however large the store, and the operating system streams from disk what does not fit.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..data.boxes import load_sample_rgb
from ..errors import DataError, FinegrainError
from .views import ViewRecipe, image_views

Runner = Callable[[np.ndarray], np.ndarray]  # (N, H, W, 3) uint8 → (N, C, h, w) float32 trunk activations
DISK_MARGIN = 1.05


def store_key(backbone_key: str, split: int, recipe: ViewRecipe) -> str:
    """Everything that changes a stored activation; the number of views is not in it (view v is the same
    whatever K is), so a store with 4 views per image serves a run that needs 2 and grows for one that needs 8."""
    recipe_part = {k: v for k, v in recipe.to_dict().items() if k != "n_views"}
    blob = json.dumps({"backbone": backbone_key, "split": split, "recipe": recipe_part, "dtype": "float16"},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class ActivationStore:
    """sha → (n_views, C, h, w) float16 activations, in append-only memory-mapped chunks."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._where: dict[str, tuple[str, int, int]] = {}  # sha → (chunk, row, views in that chunk)
        self._arrays: dict[str, np.ndarray] = {}
        self.refresh()

    def refresh(self) -> None:
        """Read the committed chunks' indexes (those of other processes too); the most views per sha wins."""
        for index in sorted(self.directory.glob("chunk-*.json")):
            chunk = index.stem
            if chunk in self._arrays:
                continue
            try:
                meta = json.loads(index.read_text(encoding="utf-8"))
                self._arrays[chunk] = np.load(self.directory / f"{chunk}.npy", mmap_mode="r")
            except (OSError, ValueError):
                continue  # a chunk that cannot be read is recomputed, never trusted
            for row, sha in enumerate(meta["shas"]):
                if sha not in self._where or self._where[sha][2] < meta["n_views"]:
                    self._where[sha] = (chunk, row, int(meta["n_views"]))

    def views_of(self, sha: str) -> int:
        return self._where[sha][2] if sha in self._where else 0

    def missing(self, shas: Iterable[str], n_views: int) -> list[str]:
        return list(dict.fromkeys(s for s in shas if self.views_of(s) < n_views))

    def add(self, shas: Sequence[str], activations: np.ndarray) -> None:
        """Commit one chunk: (n, V, C, h, w) activations of `shas`."""
        chunk = f"chunk-{time.time_ns():020d}-{os.getpid()}"
        array_tmp = self.directory / f".{chunk}.npy.tmp"
        index_tmp = self.directory / f".{chunk}.json.tmp"
        try:
            with array_tmp.open("wb") as fh:
                np.save(fh, np.ascontiguousarray(activations, dtype=np.float16))
            os.replace(array_tmp, self.directory / f"{chunk}.npy")
            index_tmp.write_text(json.dumps({"shas": list(shas), "n_views": int(activations.shape[1])}),
                                 encoding="utf-8")
            os.replace(index_tmp, self.directory / f"{chunk}.json")
        except OSError as exc:
            raise DataError(f"cannot write to the activation store {self.directory}", expected="a writable folder with space",
                            found=str(exc), fix="free disk space or pass --cache-dir on a larger disk; "
                                                "re-running resumes from what was written") from None
        finally:
            array_tmp.unlink(missing_ok=True)
            index_tmp.unlink(missing_ok=True)
        self.refresh()

    def gather(self, shas: Sequence[str], views: Sequence[int]) -> np.ndarray:
        """(B, C, h, w) float32: view `views[i]` of image `shas[i]`."""
        rows = []
        for sha, v in zip(shas, views):
            chunk, row, _ = self._where[sha]
            rows.append(self._arrays[chunk][row, v])
        return np.stack(rows).astype(np.float32)

    def bytes_per_view(self) -> int | None:
        for arr in self._arrays.values():
            return int(np.prod(arr.shape[2:])) * 2
        return None


def check_disk_space(directory: Path, n_views_total: int, bytes_per_view: int) -> None:
    """Stop before computing anything when the store cannot fit, naming the folder and the space it needs."""
    needed = int(n_views_total * bytes_per_view * DISK_MARGIN)
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise DataError(f"not enough disk space for the trunk activations in {directory}",
                        expected=f"{needed / 2**30:.2f} GiB free", found=f"{free / 2**30:.2f} GiB free",
                        fix="free space (`finegrain cache` lists what the cache holds; `--prune DAYS` removes what "
                            "no run used lately), pass --cache-dir on a larger disk, or lower --views")


def _decode_views(path: str, sha: str, pre, recipe: ViewRecipe, n_views: int,
                  max_pixels: int | None) -> np.ndarray | str:
    try:
        return image_views(load_sample_rgb(path, max_pixels=max_pixels), sha, pre, recipe, n_views)
    except FinegrainError as exc:
        return getattr(exc, "reason", str(exc))


def fill_store(store: ActivationStore, todo: Sequence[tuple[str, str]], n_views: int, runner: Runner, pre,
               recipe: ViewRecipe, *, images_per_chunk: int = 16, workers: int = 2,
               max_pixels: int | None = None, progress: bool = True, desc: str = "trunk activations") -> dict[str, str]:
    """Compute and commit the activations of `todo` [(sha, path)]; returns {sha: reason} for unreadable images.

    Decoding of the next chunk overlaps with the trunk on the current one."""
    from tqdm import tqdm

    errors: dict[str, str] = {}
    chunks = [todo[i:i + images_per_chunk] for i in range(0, len(todo), images_per_chunk)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(todo), desc=desc, unit="img", file=sys.stderr, disable=not progress or not todo,
                 dynamic_ncols=True, leave=False) as bar:
        def submit(chunk):
            return [(sha, pool.submit(_decode_views, path, sha, pre, recipe, n_views, max_pixels)) for sha, path in chunk]

        pending = [submit(c) for c in chunks[:2]]
        for i in range(len(chunks)):
            current = pending.pop(0)
            if i + 2 < len(chunks):
                pending.append(submit(chunks[i + 2]))
            decoded = [(sha, fut.result()) for sha, fut in current]
            errors.update({sha: v for sha, v in decoded if isinstance(v, str)})
            ok = [(sha, v) for sha, v in decoded if not isinstance(v, str)]
            if ok:
                flat = runner(np.concatenate([v for _, v in ok]))
                store.add([sha for sha, _ in ok], flat.reshape(len(ok), n_views, *flat.shape[1:]))
            bar.update(len(current))
    return errors
