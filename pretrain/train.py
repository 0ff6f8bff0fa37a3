"""`cmbert pretrain`: masked-LM pretraining of ModernBERT on packed shards with DeepSpeed.

One linear loop: build (distributed, tokenizer, model, data, optimizer, engine) -> resume -> for each step: read its
rows, mask, forward/backward per micro-batch, optimizer step, log, evaluate, checkpoint -> final checkpoint -> export.

    cmbert pretrain --config configs/pretrain/phase1-1k.yaml optim.lr=5e-4          # one process
    torchrun --nproc_per_node 8 -m cmbert.pretrain.train --config ... [key=value ...]       # one node
    deepspeed --num_gpus 8 pretrain/train.py --config ...                            # DeepSpeed's launcher

Exact resume: a step's rows are a pure function of the global sample index (`PackedDataset`) and its masks a pure
function of (seed, step, micro-batch, rank) (`cmbert.pretrain.masking.step_generator`), so a checkpoint only needs the
model, optimizer and LR-schedule state (DeepSpeed's) plus the step and sample counters: a run killed at any moment
and resumed logs the same per-step losses as one that was never interrupted.

Checkpoints (`<out>/ckpt/step-NNNNNNNN/`): every `checkpoint.every_steps`, on SIGTERM (SLURM sends it before the time
limit; every rank agrees at the end of the step, saves, and exits 0) and at the end. A checkpoint counts only once
`cmbert_complete.json` is written in it, after every rank has finished writing, so one cut short by a kill is never
resumed from; the newest `keep_last` complete ones are kept.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import torch

from cmbert.core.errors import UserError
from cmbert.core.runtime import git_sha, init_distributed
from cmbert.pretrain.config import PretrainConfig, deepspeed_config, load_config
from cmbert.pretrain.export import COMPLETE, HF_FILES, complete_checkpoints, export_checkpoint

CKPT = "ckpt"


# ------------------------------------------------------------------------------------------------ distributed


# ------------------------------------------------------------------------------------------------ building


def build_model(cfg: PretrainConfig, tokenizer):
    """A fresh ModernBERT of the config's shape, or `init_from` a transformers folder (continued pretraining) with
    the config's RoPE thetas and context applied (the 8k extension)."""
    from transformers import ModernBertConfig

    from cmbert.modeling import ModernBertForMaskedLM, enable_checkpointing, set_special_token_ids
    from cmbert.pretrain.tokenizer import padded_vocab_size

    m = cfg.model
    rope = {"full_attention": {"rope_type": "default", "rope_theta": m.global_rope_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": m.local_rope_theta}}
    if m.init_from:
        # The thetas are read when the rotary modules are built, so they go into the config before loading.
        config = ModernBertConfig.from_pretrained(m.init_from)
        if len(tokenizer) > config.vocab_size:
            raise UserError(f"data.tokenizer has {len(tokenizer)} tokens but {m.init_from} only "
                            f"{config.vocab_size}: continue with the model's own tokenizer")
        config.rope_parameters = rope
        config.max_position_embeddings = m.max_position_embeddings
        model = ModernBertForMaskedLM.from_pretrained(m.init_from, config=config)
    else:
        config = ModernBertConfig(
            vocab_size=padded_vocab_size(len(tokenizer)), hidden_size=m.hidden_size,
            intermediate_size=m.intermediate_size, num_hidden_layers=m.num_hidden_layers,
            num_attention_heads=m.num_attention_heads, global_attn_every_n_layers=m.global_attn_every_n_layers,
            local_attention=m.local_attention, max_position_embeddings=m.max_position_embeddings,
            initializer_range=m.initializer_range, rope_parameters=rope,
            **dict.fromkeys(("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id")),
        )
        set_special_token_ids(config, tokenizer)  # ids come from the tokenizer, never ModernBertConfig's defaults
        model = ModernBertForMaskedLM(config)
    if m.activation_checkpointing:
        enable_checkpointing(model)
    return model


def check_data(cfg: PretrainConfig, data, tokenizer_dir: Path) -> None:
    """The shards must come from this tokenizer and fit the model's context."""
    from cmbert.core.tokenizer_files import tokenizer_sha256

    manifest = data.manifest
    sha = tokenizer_sha256(tokenizer_dir)
    if manifest["tokenizer"]["sha256"] != sha:
        raise UserError(f"{cfg.data.shards} was packed with another tokenizer than {cfg.data.tokenizer} "
                        f"(sha256 {manifest['tokenizer']['sha256'][:12]} vs {sha[:12]})")
    if manifest["max_seq_len"] > cfg.model.max_position_embeddings:
        raise UserError(f"{cfg.data.shards} has rows of {manifest['max_seq_len']} tokens, more than "
                        f"model.max_position_embeddings = {cfg.model.max_position_embeddings}")


def provenance(cfg: PretrainConfig, world_size: int, device: torch.device) -> dict:
    import deepspeed
    import transformers

    sha = git_sha()
    return {
        "config": cfg.to_dict(), "git_sha": sha, "world_size": world_size, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "deepspeed": deepspeed.__version__},
    }


# ------------------------------------------------------------------------------------------------ checkpoints


def _prune(ckpt: Path, keep_last: int) -> None:
    """Rank 0, after a complete save: drop all but the newest `keep_last` complete checkpoints, and any incomplete
    one older than the newest complete (a save cut short by an earlier kill)."""
    complete = complete_checkpoints(ckpt)
    keep = {folder for _, folder in complete[-keep_last:]}
    newest = complete[-1][0] if complete else -1
    for folder in ckpt.glob("step-*"):
        step = int(folder.name.split("-")[1])
        if folder not in keep and step <= newest:
            shutil.rmtree(folder, ignore_errors=True)


def save_checkpoint(engine, ckpt: Path, step: int, samples: int, rank: int, keep_last: int) -> None:
    tag = f"step-{step:08d}"
    # Every rank writes its own ZeRO partition; the marker goes in only when all of them have (sync point).
    engine.save_checkpoint(str(ckpt), tag=tag, client_state={"step": step, "samples": samples})
    torch.distributed.barrier()
    if rank == 0:
        marker = ckpt / tag / COMPLETE
        Path(f"{marker}.tmp").write_text(json.dumps({"step": step, "samples": samples}))
        os.replace(f"{marker}.tmp", marker)
        _prune(ckpt, keep_last)
    torch.distributed.barrier()  # nobody resumes or exits before the marker exists


# ------------------------------------------------------------------------------------------------ the loop


def step_batches(cfg: PretrainConfig, data, vocab, step: int, samples: int) -> tuple[list[dict], int]:
    """This rank's masked micro-batches for `step`, starting at global sample `samples`; returns them and the sample
    index after the step. A pure function of its arguments: this is what makes resume exact."""
    from cmbert.pretrain.masking import mask_tokens, step_generator
    from cmbert.pretrain.optim import batch_size_at
    from cmbert.pretrain.packed_dataset import collate

    s = cfg.schedule
    rows = batch_size_at(step - 1, s.batch_warmup_start_rows, s.rows_per_micro_batch, s.batch_warmup_steps)
    batches = []
    for micro in range(s.grad_accum):
        # this rank's share of the global samples [samples, samples + rows * world_size)
        batch = collate(list(data.iter_from(samples, stop=samples + rows * data.world_size)))
        samples += rows * data.world_size
        batch["input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"], vocab, cfg.masking.probability, step_generator(cfg.seed, step, micro, data.rank),
            mask_fraction=cfg.masking.mask_fraction, random_fraction=cfg.masking.random_fraction)
        batches.append(batch)
    return batches, samples


def evaluate(engine, batch: dict) -> tuple[float, float]:
    """Held-out MLM loss and accuracy (top-1 at the masked positions) on one fixed masked batch."""
    engine.eval()
    with torch.no_grad():
        out = engine(**batch, return_logits=True)
        labels = batch["labels"][batch["labels"] != -100].to(out.logits.device)
        accuracy = (out.logits.argmax(-1) == labels).float().mean().item()
    engine.train()
    return out.loss.item(), accuracy


def main(cfg: PretrainConfig) -> dict:
    import deepspeed
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from cmbert.core.runlog import MetricsLogger
    from cmbert.core.tokenizer_files import save_tokenizer
    from cmbert.pretrain.masking import MaskingVocab, mask_tokens, step_generator
    from cmbert.pretrain.metrics import format_progress, mfu, peak_flops, step_flops
    from cmbert.pretrain.optim import build_optimizer, build_scheduler, check_zero_support
    from cmbert.pretrain.packed_dataset import PackedDataset, collate

    # --- build
    rank, world, device = init_distributed()
    out, ckpt = Path(cfg.out), Path(cfg.out) / CKPT
    bf16 = cfg.distributed.precision == "bf16" or (cfg.distributed.precision == "auto" and device.type == "cuda")
    ds_config = deepspeed_config(cfg, bf16)
    check_zero_support(cfg.optim.name, ds_config["zero_optimization"]["stage"])
    tokenizer = AutoTokenizer.from_pretrained(cfg.data.tokenizer)
    data = PackedDataset(cfg.data.shards, seed=cfg.seed, rank=rank, world_size=world, weights=cfg.data.weights)
    check_data(cfg, data, Path(cfg.data.tokenizer))
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(cfg, tokenizer).set_attention_backend(cfg.model.attention_backend)  # this model's only
    info = provenance(cfg, world, device)
    if rank == 0:
        (ckpt / HF_FILES).mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(ckpt / HF_FILES)
        save_tokenizer(tokenizer, ckpt / HF_FILES)
        (out / "run.json").write_text(json.dumps(info, indent=2) + "\n")
        print(f"pretrain: world size {world} on {info['device_name']}, git {info['git_sha']}, "
              f"{sum(p.numel() for p in model.parameters()):,} parameters; config and versions in {out}/run.json")

    optimizer = build_optimizer(model, cfg.optim.name, cfg.optim.lr, cfg.optim.betas, cfg.optim.eps,
                                cfg.optim.weight_decay)
    s = cfg.schedule
    scheduler = build_scheduler(optimizer, s.max_steps, s.warmup_steps, s.decay_steps, s.min_lr_ratio, s.decay_shape)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    if cfg.model.compile:
        engine.compile()

    # --- resume
    step, samples = 0, 0
    if cfg.checkpoint.resume and (found := complete_checkpoints(ckpt)):
        _, folder = found[-1]
        _, client = engine.load_checkpoint(str(ckpt), tag=folder.name)
        step, samples = client["step"], client["samples"]
        if rank == 0:
            print(f"pretrain: resumed from {folder} (step {step:,}, {samples:,} samples)")

    vocab = MaskingVocab.from_tokenizer(tokenizer)
    # Held-out rows: the last ones of the first epoch's order; training reaches them only past one epoch.
    eval_rows = [data.row(len(data) - 1 - i) for i in range(min(cfg.data.eval_rows, len(data) // 10))]
    planned = s.max_steps * s.rows_per_micro_batch * s.grad_accum * world
    if rank == 0 and eval_rows and planned > len(data) - len(eval_rows):
        print(f"pretrain: note: {planned:,} training rows pass the end of the first epoch ({len(data):,} rows), so "
              "training also sees the held-out rows: the held-out loss then measures memorisation too")
    eval_batch = None
    if eval_rows:
        eval_batch = collate(eval_rows)
        eval_batch["input_ids"], eval_batch["labels"] = mask_tokens(  # masks of step 0, which is never trained
            eval_batch["input_ids"], vocab, cfg.masking.eval_probability, step_generator(cfg.seed, 0, 0, 0),
            mask_fraction=cfg.masking.mask_fraction, random_fraction=cfg.masking.random_fraction)
        eval_batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in eval_batch.items()}

    logger = MetricsLogger(out, info["config"], enabled=rank == 0, wandb_mode=cfg.logging.wandb,
                           project=cfg.logging.project, run_name=cfg.logging.run_name,
                           resume_step=step + 1 if step else None)  # a fresh run starts a fresh file
    stop = {"signal": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("signal", True))
    peak = peak_flops(device, torch.bfloat16 if bf16 else torch.float32)
    # A live bar on a terminal; in a log file (SLURM output, make demo > log) one plain line per logging step.
    interactive = sys.stderr.isatty()
    bar = tqdm(total=s.max_steps, initial=step, desc="pretrain", disable=rank != 0 or not interactive,
               dynamic_ncols=True)
    if step == 0 and eval_batch is not None:  # the held-out baseline, before any update
        eval_loss, eval_accuracy = evaluate(engine, eval_batch)
        logger.log(0, eval_loss=eval_loss, eval_accuracy=eval_accuracy)

    # --- loop
    engine.train()
    while step < s.max_steps:
        step += 1
        t0 = time.perf_counter()
        step_start = samples
        micro_batches, samples = step_batches(cfg, data, vocab, step, samples)
        data_seconds = time.perf_counter() - t0  # reading, packing into a batch and masking: the data wait
        # The loss of a step is the mean over all its masked tokens on this rank, whatever the micro-batching.
        n_labelled = sum(int((b["labels"] != -100).sum()) for b in micro_batches)
        loss_total, flops, tokens = torch.zeros((), device=device), 0.0, 0
        for batch in micro_batches:
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            loss = engine(**batch, num_items_in_batch=max(n_labelled, 1), return_logits=False).loss
            # The loss is already divided by the step's labelled tokens; DeepSpeed divides by grad_accum again, so
            # we multiply it back. (backward(scale_wrt_gas=False) looks like the direct way, but measured with
            # DeepSpeed 0.19.8: ZeRO 0 and ZeRO 1-3 then give different losses at grad_accum > 1.)
            engine.backward(loss * s.grad_accum)
            engine.step()  # DeepSpeed steps the optimizer and LR schedule at the last micro-batch only
            loss_total += loss.detach()  # summed on the device: one host sync per step, below
            flops += step_flops(engine.module.config, batch["cu_seqlens"].tolist(), int((batch["labels"] != -100).sum()))
            tokens += batch["input_ids"].numel()
        loss_sum = loss_total.item()
        seconds = time.perf_counter() - t0
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"loss is {loss_sum} at step {step}: lower optim.lr or check the data")

        if step % cfg.logging.every_steps == 0 or step == s.max_steps:
            # Mean over ranks of each rank's per-token loss, and the whole job's throughput (sync point).
            stats = torch.tensor([loss_sum, tokens, flops], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(stats)
            lr = engine.get_lr()[0]
            utilization = mfu(stats[2].item(), seconds, peak, world)
            logger.log(step, loss=stats[0].item() / world, lr=lr, tokens_per_s=stats[1].item() / seconds,
                       rows=samples - step_start, samples=samples, data_fraction=data_seconds / seconds,
                       **({"mfu": utilization} if utilization is not None else {}))
            progress = format_progress(step, s.max_steps, stats[0].item() / world, lr, stats[1].item() / seconds,
                                       utilization)
            bar.set_postfix_str(progress)
            if rank == 0 and not interactive:
                print(f"pretrain: step {step:,}/{s.max_steps:,} {progress}", flush=True)
        if eval_batch is not None and (step % cfg.logging.eval_every_steps == 0 or step == s.max_steps):
            eval_loss, eval_accuracy = evaluate(engine, eval_batch)
            logger.log(step, eval_loss=eval_loss, eval_accuracy=eval_accuracy)
        bar.update()

        # Every rank must agree to stop on SIGTERM, or the others would wait forever in the checkpoint (sync point).
        flag = torch.tensor([float(stop["signal"])], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() or step % cfg.checkpoint.every_steps == 0 or step == s.max_steps:
            save_checkpoint(engine, ckpt, step, samples, rank, cfg.checkpoint.keep_last)
        if flag.item():
            if rank == 0:
                print(f"\npretrain: stopped by SIGTERM after step {step:,}; rerun the same command to resume")
            break
    bar.close()
    logger.close()

    # --- export (rank 0, from the final checkpoint: one code path with `cmbert export`)
    result = {"step": step, "samples": samples, "out": str(out)}
    if step == s.max_steps:
        torch.distributed.barrier()
        if rank == 0:
            export_checkpoint(ckpt, out / "model")
            result["export"] = str(out / "model")
            print(f"pretrain: done; transformers folder in {out / 'model'}")
        torch.distributed.barrier()
    return result


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, PretrainConfig]:
    parser = argparse.ArgumentParser(prog="cmbert pretrain", description="MLM pretraining with DeepSpeed.")
    parser.add_argument("--config", help="a YAML preset, e.g. configs/pretrain/phase1-1k.yaml")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=5e-4")
    args = parser.parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args, load_config(args.config, args.overrides)


if __name__ == "__main__":
    from cmbert.core.config import ConfigError

    try:
        _, config = parse_args(sys.argv[1:])
    except ConfigError as error:
        print(f"cmbert pretrain: error: {error}", file=sys.stderr)
        sys.exit(2)
    main(config)
