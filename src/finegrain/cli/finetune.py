"""`finegrain finetune DATA -o MODEL`: partial fine-tuning on stored trunk activations, then the usual head."""
from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_calibration_options, add_tta_option, positive_int

RAY_WORKERS = 2


def _train_blocks(value: str) -> int | str:
    if value == "all":
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of blocks ≥ 0 or 'all', found {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number of blocks ≥ 0 or 'all', found {value!r}")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..finetune.settings import (DEFAULT_FINETUNE_BACKBONE, DEFAULT_FINETUNE_TTA, DEFAULT_TRAIN_BLOCKS,
                                     DEFAULT_VAL_SPLIT, RBI_RPES, TrainSettings)

    d = TrainSettings()
    p.add_argument("data", help="folder, manifest (.csv/.parquet) or CUB-style folder, as for fit")
    p.add_argument("-o", "--output", required=True, type=Path, help="model directory to write")
    p.add_argument("--backbone", default=DEFAULT_FINETUNE_BACKBONE,
                   help=f"backbone to tune (default {DEFAULT_FINETUNE_BACKBONE}: 320 px, the whole shorter side; "
                        "efficientnet_lite0 is its 224-px centre crop, 2× faster to predict); 'a+b' tunes each member, "
                        "then joins them; 'NAME@SIZE-whole' or 'NAME@pad' sets its input size and framing (see "
                        "`finegrain backbones`)")
    p.add_argument("--train-blocks", type=_train_blocks, default=DEFAULT_TRAIN_BLOCKS, metavar="N|all",
                   help=f"train the last N blocks (+ the final conv) on stored activations of the rest (default "
                        f"{DEFAULT_TRAIN_BLOCKS}); 0: classifier only; all: full fine-tuning (slow on a CPU, for GPUs)")
    g = p.add_argument_group("views (computed once, stored)")
    g.add_argument("--views", type=int, default=8, help="stored views per training image: the centre crop + random "
                                                        "resized crops (default 8)")
    g.add_argument("--crop-scale", type=float, default=0.35, help="smallest crop, as a fraction of the image area (default 0.35)")
    g.add_argument("--jitter", type=float, default=0.2, help="brightness/contrast/saturation jitter, 0 = off (default 0.2)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default {d.epochs})")
    g.add_argument("--lr", type=float, default=d.lr, help=f"classifier learning rate (default {d.lr})")
    g.add_argument("--backbone-lr", type=float, default=d.backbone_lr,
                   help=f"learning rate of the last block; earlier ones get it × layer decay per block (default {d.backbone_lr})")
    g.add_argument("--layer-decay", type=float, default=d.layer_decay, help=f"default {d.layer_decay}")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"AdamW weight decay (default {d.weight_decay})")
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help=f"default {d.label_smoothing}")
    g.add_argument("--ema-decay", type=float, default=d.ema_decay, help=f"EMA decay of the weights, 0 = off (default {d.ema_decay})")
    g.add_argument("--mixup", type=float, default=d.mixup, help="MixUp Beta(α, α) on activations, 0 = off (default)")
    g.add_argument("--cutmix", type=float, default=d.cutmix, help="CutMix Beta(α, α) on activation maps, 0 = off (default)")
    g.add_argument("--salmix", type=float, default=d.salmix,
                   help="saliency-guided CutMix (SMMix-like): the box pasted is where the pasted image's class "
                        "activation map is highest; Beta(α, α), 0 = off (default)")
    g.add_argument("--mixoe", type=float, default=d.mixoe,
                   help="MixOE: weight of a loss on known images mixed with synthetic outliers (blends of two "
                        "classes) towards uniform targets, for a sharper 'unknown'; 0 = off (default)")
    g.add_argument("--train-batch-size", type=int, default=d.batch_size, help=f"images per step (default {d.batch_size})")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=d.precision,
                   help="bf16 autocast: auto uses it on GPUs and on CPUs with AMX/AVX512-BF16 (default auto)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d.device, help="default auto (cuda when present)")
    g.add_argument("--restart", action="store_true", help="train again: discard the checkpoint of an interrupted identical run, or the kept "
                        "weights of a finished one (which an identical run otherwise reuses)")
    g = p.add_argument_group("RBI: attention across the batch while fine-tuning (paper #1, RRA + RPE)")
    g.add_argument("--rbi", action="store_true",
                   help="train an RBI network between pooling and the classifier; it becomes the model's `rbi` head "
                        "(predict/eval --head-mode single|bank|transductive|plain)")
    g.add_argument("--rbi-rpe", choices=RBI_RPES, default=d.rbi_rpe,
                   help="relationship encoding: a learned self-pair bias (default), relative batch positions, none, or "
                        "a learned scale × the PSNR-style / cosine similarity of the images' stored activations")
    g.add_argument("--rbi-sampler", choices=["pk", "random"], default=d.rbi_sampler,
                   help="batches of P classes × K images (default pk) or shuffled images")
    g.add_argument("--rbi-k", type=positive_int, default=d.rbi_k, help=f"K images per class in a P×K batch (default {d.rbi_k})")
    g.add_argument("--rbi-width", type=positive_int, default=d.rbi_width, help=f"attention width (default {d.rbi_width})")
    g.add_argument("--rbi-heads", type=positive_int, default=d.rbi_heads, help=f"attention heads (default {d.rbi_heads})")
    g.add_argument("--rbi-layers", type=positive_int, default=d.rbi_layers, help=f"attention blocks (default {d.rbi_layers})")
    g.add_argument("--rbi-aux-weight", type=float, default=d.rbi_aux_weight,
                   help=f"weight of the loss on the unrefined features (default {d.rbi_aux_weight})")
    g.add_argument("--rbi-mode", choices=["single", "bank", "transductive", "plain"], default=d.rbi_mode,
                   help="inference mode saved with the model: single (each image alone, default), bank (each image "
                        "with the class prototypes), transductive (evaluation only: batches of the inputs) or plain "
                        "(attention skipped: RBI as a training-time regulariser)")
    p.add_argument("--val-split", type=float, default=DEFAULT_VAL_SPLIT,
                   help=f"fraction of train held out per class when DATA has no val split: chooses the epoch, the head's "
                        f"C and the calibration, never trained on (default {DEFAULT_VAL_SPLIT}; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--sweep", type=positive_int, default=None, metavar="N",
                   help="train N soup ingredients (seeds SEED … SEED+N−1, one shared held-out set) into "
                        "OUTPUT-ingredients/, then write their greedy soup to OUTPUT (see `finegrain soup`)")
    p.add_argument("--max-error-rate", type=float, default=0.05, help="fail when more than this fraction of images is unreadable (default 0.05)")
    add_calibration_options(p)
    add_tta_option(p, default=DEFAULT_FINETUNE_TTA)
    g = p.add_argument_group("scale-out on Ray Train (pip install 'finegrain[ray]')")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: the epochs data-parallel on --ray-workers Ray Train "
                        "workers (same global batch and steps), sharing the local Ray's CPUs (--threads, default "
                        "one per core) or the cluster's equally")
    g.add_argument("--ray-workers", type=positive_int, default=None, metavar="N",
                   help=f"Ray Train workers (default {RAY_WORKERS}); one GPU each where the cluster has them")
    g.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="join this Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: start a local Ray); "
                        "every node must see the cache folder at the same path")


def run(args: argparse.Namespace) -> int:
    from ..cachedir import folder_size, format_size
    from ..finetune.api import finetune
    from ..finetune.settings import TrainSettings
    from .common import embed_kwargs, info, save_with_diagram

    settings = TrainSettings(epochs=args.epochs, batch_size=args.train_batch_size, lr=args.lr,
                             backbone_lr=args.backbone_lr, layer_decay=args.layer_decay, weight_decay=args.weight_decay,
                             label_smoothing=args.label_smoothing, ema_decay=args.ema_decay, mixup=args.mixup,
                             cutmix=args.cutmix, salmix=args.salmix, precision=args.precision, device=args.device,
                             mixoe=args.mixoe, seed=args.seed, rbi=args.rbi, rbi_rpe=args.rbi_rpe, rbi_sampler=args.rbi_sampler,
                             rbi_k=args.rbi_k, rbi_width=args.rbi_width, rbi_heads=args.rbi_heads,
                             rbi_layers=args.rbi_layers, rbi_aux_weight=args.rbi_aux_weight, rbi_mode=args.rbi_mode)
    kwargs = dict(backbone=args.backbone, train_blocks=args.train_blocks, views=args.views, engine=args.engine,
                  ray=_ray_options(args), crop_scale=args.crop_scale, jitter=args.jitter, settings=settings,
                  val_split=args.val_split, seed=args.seed, cache_dir=args.cache_dir,
                  max_error_rate=args.max_error_rate, calibrate=args.calibrate, ood_method=args.ood_score,
                  restart=args.restart, runtime=args.runtime or "auto", tta=args.tta, **embed_kwargs(args))
    if args.sweep:
        return _sweep(args, kwargs)
    clf = finetune(args.data, **kwargs)
    save_with_diagram(args, clf)
    ft, t = clf.info["finetune"], clf.info["training"]
    for m in ft["members"]:
        net_acc = m["network_val_accuracy"]
        info(args, f"{m['base']}: trained {m['trained_stages']} stage(s), kept epoch {m['best_epoch'] or m['settings']['epochs']}"
                    + (f" (network's validation accuracy {net_acc:.3f})" if net_acc is not None else "")
                    + f"; activations {m['store_seconds']:.0f} s, training {m['train_seconds']:.0f} s")
    info(args, f"fine-tuned on {t['n_train']} images of {len(clf.classes)} classes ({t['n_val']} held out for "
                f"validation) in {ft['seconds']:.0f} s → {args.output}")
    stored = sum(folder_size(Path(m["store"])) for m in ft["members"] if Path(m["store"]).is_dir())
    info(args, f"the trunk activations ({format_size(stored)}) stay in the cache for the next run; `finegrain cache` "
               "lists what it holds, `--prune DAYS` removes what no run used lately")
    return 0


def _sweep(args: argparse.Namespace, kwargs: dict) -> int:
    """--sweep N: N ingredients into OUTPUT-ingredients/seedK (kept across reruns), their greedy soup into OUTPUT."""
    from ..finetune.soup import soup, sweep
    from .common import save_with_diagram
    from .soup import print_soup_summary

    seed = kwargs.pop("seed")
    folder = args.output.with_name(f"{args.output.name}-ingredients")
    ingredients = sweep(args.data, args.sweep, folder, seed=seed, **kwargs)
    clf = soup(ingredients, args.data, method="greedy", seed=seed, cache_dir=args.cache_dir,
               batch_size=kwargs["batch_size"], workers=kwargs["workers"], max_pixels=kwargs["max_pixels"],
               progress=kwargs["progress"], calibrate=args.calibrate, ood_method=args.ood_score, tta=args.tta)
    save_with_diagram(args, clf)
    print_soup_summary(args, clf)
    return 0


def _ray_options(args: argparse.Namespace):
    """Ray Train options for --engine ray; Ray options without it are refused rather than silently ignored."""
    from ..errors import ConfigError
    from ..scale.train import RayTrainOptions

    if args.engine == "ray":
        return RayTrainOptions(address=args.ray_address, workers=args.ray_workers or RAY_WORKERS, quiet=args.quiet)
    given = [flag for flag, value in (("--ray-workers", args.ray_workers), ("--ray-address", args.ray_address))
             if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} only apply to --engine ray", expected="--engine ray with them",
                          found="--engine local", fix="add --engine ray, or drop those options")
    return None
