"""A backbone's network as a chain of stages, so it can be cut in two: a frozen trunk and a trainable top.

Fine-tuning on a CPU trains only the upper stages on stored activations of the lower ones (`store.py`); the
tuned network is the same chain with new weights. A tuned network becomes a backbone like any other: its id
`finetuned:BASE.HASH` names the hash of its weights, so its embeddings never mix with the stock backbone's
in the cache, and the weights travel inside the model folder (`backbone.safetensors`).
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..backbones import TUNED_FAMILY as FAMILY
from ..backbones.base import Backbone
from ..backbones.torch_backbone import TorchBackbone
from ..errors import ConfigError, DataError

WEIGHTS_FILE = "backbone.safetensors"


class _LiteBlock(nn.Module):
    """One MBConv block of EfficientNet-Lite with its stochastic-depth rate (active only in training mode)."""

    def __init__(self, block: nn.Module, drop_rate: float) -> None:
        super().__init__()
        self.block, self.drop_rate = block, drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, drop_connect_rate=self.drop_rate)


class StagedFeatures(nn.Module):
    """Image (normalised NCHW) → conv feature map through `stages` in order: stem, blocks, optional tail."""

    def __init__(self, stages: list[nn.Module], n_blocks: int, has_tail: bool) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.n_blocks, self.has_tail = n_blocks, has_tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_stages(self.stages, x)

    def split_index(self, train_blocks: int | str) -> int:
        """Index of the first trainable stage: the last `train_blocks` blocks and the tail train; 'all' → 0."""
        if train_blocks == "all":
            return 0
        n = int(train_blocks)
        if not 0 <= n <= self.n_blocks:
            raise ConfigError(f"--train-blocks {train_blocks} is out of range for this backbone",
                              expected=f"0 to {self.n_blocks}, or 'all'", found=str(train_blocks),
                              fix=f"use a number of blocks between 0 and {self.n_blocks}")
        return len(self.stages) - n - int(self.has_tail) if n else len(self.stages)


def run_stages(stages, x: torch.Tensor) -> torch.Tensor:
    for stage in stages:
        x = stage(x)
    return x


def _lite_stages(net: nn.Module) -> StagedFeatures:
    rate = net._global_params.drop_connect_rate or 0.0
    n = len(net._blocks)
    stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
    blocks = [_LiteBlock(b, rate * i / n) for i, b in enumerate(net._blocks)]
    tail = nn.Sequential(net._conv_head, net._bn1, copy.deepcopy(net._swish))
    return StagedFeatures([stem, *blocks, tail], n_blocks=n, has_tail=True)


def _sequential_stages(seq: nn.Sequential) -> StagedFeatures:
    """Each module with parameters starts a stage; parameter-free ones (activations) join the one before."""
    groups: list[list[nn.Module]] = []
    for module in seq:
        if any(True for _ in module.parameters()) or not groups:
            groups.append([module])
        else:
            groups[-1].append(module)
    stages = [nn.Sequential(*g) for g in groups]
    return StagedFeatures(stages, n_blocks=len(stages) - 1, has_tail=False)


def staged_copy(backbone: Backbone) -> StagedFeatures:
    """A trainable copy of `backbone`'s network as stages (the backbone itself is left untouched)."""
    features = getattr(backbone, "features", None)
    if isinstance(features, StagedFeatures):
        staged = features
    elif features is not None and hasattr(features, "net") and hasattr(features.net, "_blocks"):
        staged = _lite_stages(features.net)
    elif isinstance(features, nn.Sequential):
        staged = _sequential_stages(features)
    else:
        raise ConfigError(f"backbone '{backbone.id}' cannot be fine-tuned",
                          expected="an EfficientNet-Lite, a tiny test network or a fine-tuned one",
                          found=type(features).__name__ if features is not None else type(backbone).__name__,
                          fix="use --backbone efficientnet_lite0 (or lite1/lite2)")
    staged = copy.deepcopy(staged).eval()
    for p in staged.parameters():
        p.requires_grad_(False)
    return staged


def weights_hash(staged: StagedFeatures) -> str:
    """SHA-256 over every tensor of the network, in a fixed order: names the tuned weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(staged.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def tuned_id(base_id: str, digest: str) -> str:
    return f"{FAMILY}:{base_id}.{digest[:16]}"


def base_of(backbone_id: str) -> str:
    """'finetuned:efficientnet_lite0.0123abcd' → 'efficientnet_lite0'."""
    arg = backbone_id.partition(":")[2]
    return arg.rpartition(".")[0] or arg


_TUNED: dict[str, TorchBackbone] = {}


def tuned_backbone(base: Backbone, staged: StagedFeatures) -> TorchBackbone:
    """Register the tuned network as a backbone of its own (id and fingerprint from its weights)."""
    staged = staged.eval()
    for p in staged.parameters():
        p.requires_grad_(False)
    digest = weights_hash(staged)
    bb = TorchBackbone(tuned_id(base.id, digest), staged, base.embed_dim, base.preprocess, fingerprint=digest)
    _TUNED[bb.id] = bb
    return bb


def registered(backbone_id: str) -> TorchBackbone:
    """The tuned backbone `backbone_id`, once a model folder holding it has been loaded in this process."""
    if backbone_id not in _TUNED:
        raise ConfigError(f"fine-tuned backbone '{backbone_id}' is not loaded",
                          expected="the model folder that holds its weights",
                          found="only its id", fix="pass the model folder (e.g. --backbone models/birds-tuned)")
    return _TUNED[backbone_id]


def save_tuned(backbone: TorchBackbone, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in backbone.features.state_dict().items()}
    save_file(state, str(path), metadata={"backbone": backbone.id, "base": base_of(backbone.id)})


def load_tuned(path: Path, backbone_id: str) -> TorchBackbone:
    """Rebuild a tuned backbone from its weights file, refusing one whose weights do not match its id."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..backbones import get_backbone

    if backbone_id in _TUNED:
        return _TUNED[backbone_id]
    base = get_backbone(base_of(backbone_id))
    staged = staged_copy(base)
    try:
        state = load_file(str(path))
        staged.load_state_dict(state, strict=True)
    except (OSError, SafetensorError, RuntimeError, ValueError) as exc:
        raise DataError(f"cannot load the fine-tuned backbone weights {path}",
                        expected=f"a safetensors file of '{base.id}' weights", found=str(exc).splitlines()[0][:200],
                        fix="copy the whole model folder again, or re-run `finegrain finetune`") from None
    bb = tuned_backbone(base, staged)
    if bb.id != backbone_id:
        _TUNED.pop(bb.id, None)
        raise DataError(f"the fine-tuned weights in {path} are not the ones this model was trained with",
                        expected=backbone_id, found=bb.id, fix="copy the whole model folder again")
    return bb


def agreement_with(staged: StagedFeatures, backbone: TorchBackbone, images: np.ndarray) -> float:
    """Smallest cosine between the staged network's pooled features and `backbone`'s embeddings: a stage split
    must compute exactly what the backbone computes."""
    x = backbone.to_input(images)
    with torch.inference_mode():
        a = torch.nn.functional.normalize(staged.eval()(x).mean((2, 3)), dim=1).numpy()
    b = backbone.embed(images)
    return float(np.min(np.sum(a * b, axis=1)))


def tuned_members(backbone_id: str) -> list[str]:
    """The fine-tuned members of a (possibly '+'-joined) backbone id."""
    return [m.strip() for m in backbone_id.split("+") if m.strip().startswith(f"{FAMILY}:")]


def weights_file(backbone_id: str) -> str:
    return f"backbone-{backbone_id.rpartition('.')[2]}.safetensors"


def save_model_backbones(backbone_id: str, directory: Path) -> dict[str, str]:
    """Write each tuned member's weights into a model folder; returns {backbone id: file name} for its config."""
    files = {}
    for member in tuned_members(backbone_id):
        files[member] = weights_file(member)
        save_tuned(registered(member), Path(directory) / files[member])
    return files


def load_model_backbones(files: dict[str, str], directory: Path) -> None:
    """Register the tuned backbones a model folder carries, checking each file's weights against its id."""
    for member, name in files.items():
        if Path(name).name != name or not member.startswith(f"{FAMILY}:"):
            raise DataError(f"model folder {directory} names a backbone file outside itself",
                            expected="a file name inside the model folder", found=f"{member}: {name}",
                            fix="copy the model folder as `finegrain finetune` wrote it")
        load_tuned(Path(directory) / name, member)


def backbone_of_model_folder(directory: str | Path) -> str:
    """The backbone id of a model folder (loading the tuned weights it carries), for `--backbone MODEL_DIR`."""
    import json

    config_path = Path(directory) / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        backbone_id = str(config["backbone"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{directory} is not a model folder with a backbone", expected="config.json naming a backbone",
                        found=str(exc)[:200], fix="pass a backbone name or a folder written by `finegrain finetune`") from None
    load_model_backbones(config.get("tuned_backbones") or {}, Path(directory))
    return backbone_id
