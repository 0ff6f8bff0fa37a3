"""The run log every training command writes: `metrics.jsonl` (one JSON object per line, appended; a killed run
loses at most its last line), optional wandb (offline unless the user opts in) and the loss-curve PNG."""

from __future__ import annotations

import json
import numbers
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

from cmbert.core.errors import UserError


def read_jsonl(path: Path) -> list[dict]:
    """Records of a metrics file; a line cut short by a kill mid-write is skipped."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLogger:
    """Rank 0's metrics: one JSON line per `log` call in `out_dir/metrics.jsonl` (flushed at once, so a kill loses
    nothing), the same scalars to wandb, and the loss-curve PNG `out_dir/loss.png` at `close`.

    - `enabled=False` (ranks other than 0) makes every method a no-op.
    - `wandb_mode` is "offline" (the default: files under out_dir/wandb, no network; `wandb sync` uploads them),
      "online" (the user opted in) or "disabled" (wandb is never imported). This value wins over a WANDB_MODE in the
      environment, so the config file alone decides whether anything leaves the machine. Console capture and code
      saving are off: only the scalars given to `log` and the config reach wandb.
    - `resume_step`: a resumed run keeps the existing file's lines with step < resume_step and drops the rest (steps
      the run will redo), so every step appears once; None starts a fresh file. The wandb run id is kept in
      out_dir/wandb-run-id, and a resumed run (resume_step > 1) continues that wandb run."""

    def __init__(self, out_dir: Path, config: dict, enabled: bool, wandb_mode: str = "offline",
                 project: str = "clinical-modernbert", run_name: str | None = None, resume_step: int | None = None):
        self.enabled, self.run, self.file = enabled, None, None
        if not enabled:
            return
        if wandb_mode not in ("offline", "online", "disabled"):
            raise UserError(f"wandb_mode must be offline, online or disabled, not {wandb_mode!r}")
        try:  # wandb stores the config as JSON; plain values only, so no object's repr can carry anything else
            json.dumps(config, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise TypeError(f"config must hold only plain JSON values (str, numbers, lists, dicts): {error}") from None
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "metrics.jsonl"
        kept = []
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_jsonl(self.path) if isinstance(r.get("step"), int) and r["step"] < resume_step]
        self.file = self.path.open("w")
        self.file.writelines(json.dumps(r) + "\n" for r in kept)
        self.file.flush()
        if wandb_mode != "disabled":
            import wandb

            id_file = self.out_dir / "wandb-run-id"
            resuming = resume_step is not None and resume_step > 1 and id_file.exists()  # a fresh run passes 1
            run_id = id_file.read_text().strip() if resuming else None
            run_id = run_id or secrets.token_hex(4)
            id_file.write_text(run_id + "\n")
            self.run = wandb.init(project=project, name=run_name, id=run_id, resume="allow", dir=str(self.out_dir),
                                  mode=wandb_mode, config=config,
                                  settings=wandb.Settings(console="off", save_code=False, disable_code=True))

    def log(self, step: int, **scalars: float) -> None:
        if not self.enabled:
            return
        values = {}
        for key, value in scalars.items():
            # Numbers only, so free text (a note, a sample) can never reach the file or wandb by mistake.
            if not isinstance(value, numbers.Real):
                raise TypeError(f"metric {key!r} must be a number, got {type(value).__name__}")
            values[key] = int(value) if isinstance(value, numbers.Integral) else float(value)
        self.file.write(json.dumps({"step": int(step), "time": round(time.time(), 3), **values}) + "\n")
        self.file.flush()
        if self.run is not None:
            self.run.log(values, step=int(step))

    def close(self) -> None:
        if not self.enabled or self.file is None:
            return
        self.file.close()
        self.file = None
        if self.run is not None:
            self.run.finish()
            self.run = None
        plot_metrics(self.path, self.out_dir / "loss.png")


def _ema(values: list[float], alpha: float) -> list[float]:
    """Bias-corrected exponential moving average (as TensorBoard's smoothing): the first points are not pulled
    towards zero."""
    out, avg = [], 0.0
    for n, v in enumerate(values, 1):
        avg = (1 - alpha) * avg + alpha * v
        out.append(avg / (1 - (1 - alpha) ** n))
    return out


def plot_metrics(jsonl: Path, png: Path, keys: Iterable[str] = ("loss", "eval_loss")) -> None:
    """Loss vs step (raw, with a smoothed line once there are enough points; keys starting with "eval" as
    markers), and the learning rate in a second panel when it was logged. Keys never logged are skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_jsonl(Path(jsonl))
    series = {k: [(r["step"], r[k]) for r in records if isinstance(r.get(k), (int, float))] for k in (*keys, "lr")}
    lr = series.pop("lr")
    fig, axes = plt.subplots(2 if lr else 1, 1, figsize=(8, 6 if lr else 4), sharex=True, squeeze=False)
    ax = axes[0, 0]
    for key, points in series.items():
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        if key.startswith("eval"):
            ax.plot(steps, values, "o--", markersize=4, label=key)
        elif len(values) >= 10:
            ax.plot(steps, values, alpha=0.3, linewidth=0.8, label=f"{key} (raw)")
            ax.plot(steps, _ema(list(values), alpha=min(0.5, 50 / len(values))), linewidth=1.5, label=f"{key} (EMA)")
        else:
            ax.plot(steps, values, "-", marker=".", label=key)
    ax.set_ylabel("MLM loss (cross-entropy, nats)")
    ax.set_title(f"Pretraining: {Path(jsonl).parent.name or 'run'}")
    ax.grid(alpha=0.3)
    if any(series.values()):
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no loss logged yet", ha="center", va="center", transform=ax.transAxes)
    if lr:
        steps, values = zip(*lr, strict=True)
        axes[1, 0].plot(steps, values, color="tab:green")
        axes[1, 0].set_ylabel("learning rate")
        axes[1, 0].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        axes[1, 0].grid(alpha=0.3)
    axes[-1, 0].set_xlabel("optimizer step")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
