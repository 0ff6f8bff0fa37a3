"""The Flower apps: a ClientApp that trains and validates a head on one site's embeddings, and a ServerApp that runs
FedAvg or FedProx (Flower's own strategies) over the sites and keeps the best round by federated validation.

Protocol (Flower's Message API; tested on flwr 1.42):
- query (once, before round 1): each site replies its training embeddings' count, sum and sum of squares per
  dimension (`heads.moments`); their sum standardizes the head's input for everyone (`heads.set_moments`).
- train: the strategy sends the global weights ("arrays") and a config: the head (design, dim, n-labels,
  hidden-size, dropout), the optimizer (lr, weight-decay, batch-size, local-epochs, seed), the label-list hash, the
  name of the data ("data") and Flower's "server-round" (FedProx adds "proximal-mu"). The client trains
  `local-epochs` epochs from those weights (`heads.train_epochs`) and replies its weights and
  {"num-examples": its training notes, "train-loss"}; FedAvg averages the weights by num-examples.
- evaluate: the client scores its validation notes and replies counts, never scores: positive cells, and for every
  threshold of `cmbert.core.multilabel.THRESHOLD_GRID` the true positives and predicted cells
  (`threshold_counts`). `sum_counts` adds them over the sites, which gives exactly the micro-F1 and the tuned
  threshold of the pooled validation set (`best_threshold`): federated model selection and Edin's threshold tuning
  without moving a note or a score.
- The server keeps the weights of the round with the best federated validation micro-F1, with its threshold.

Where a site's data lives: `make_client_app(site_path)` takes a function (context, data name) -> site file
(`data.write_site`). The simulation maps (data name, Flower's "partition-id") to the partition files it wrote; the
module-level `client_app` used in a deployment reads the site's own file from its node config ("data-path", given to
`flower-supernode --node-config`). `server_app` reads its settings from the run config (`flwr run --run-config`):
README "Across real sites".
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx

from cmbert.core.errors import UserError
from cmbert.core.multilabel import best_threshold, threshold_counts
from cmbert.finetune.federated.data import read_site
from cmbert.finetune.federated.heads import build_head, moments, score, set_moments, train_epochs

COUNT_KEYS = ("positives", "true-positives", "predicted")


def _head(config: ConfigRecord) -> torch.nn.Module:
    return build_head(str(config["design"]), int(config["dim"]), int(config["n-labels"]), int(config["hidden-size"]),
                      float(config["dropout"]))


def _load(config: ConfigRecord, arrays: ArrayRecord) -> torch.nn.Module:
    head = _head(config)
    head.load_state_dict(arrays.to_torch_state_dict())
    return head


def _site(site_path, context: Context, config: ConfigRecord):
    site = read_site(site_path(context, str(config["data"])))
    if site.label_hash != config["label-hash"]:
        raise UserError(f"site labels {site.label_hash} differ from the federation's {config['label-hash']}: the "
                        "site's data was built with another label list (same codes, same order are required)")
    return site


def make_client_app(site_path: Callable[[Context, str], str | Path], threads: int = 1) -> ClientApp:
    """A ClientApp reading its site's file from `site_path(context, data_name)`; `threads`: torch threads per client
    (simulated clients share the machine's cores)."""
    app = ClientApp()

    def received(msg: Message, context: Context):
        """(config, site data, head with the global weights) of a train or evaluate message."""
        torch.set_num_threads(threads)
        config = msg.content["config"]
        return config, _site(site_path, context, config), _load(config, msg.content["arrays"])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        config, site, head = received(msg, context)
        # A different stream per round and site, reproducible from the run's seed.
        seed = int(config["seed"]) * 1_000_003 + int(config["server-round"]) * 1_009 + \
            int(context.node_config.get("partition-id", 0))
        loss = train_epochs(head, site.train_x, site.train_y, int(config["local-epochs"]), float(config["lr"]),
                            float(config["weight-decay"]), int(config["batch-size"]), seed,
                            proximal_mu=float(config.get("proximal-mu", 0.0)))
        metrics = MetricRecord({"num-examples": len(site.train_x), "train-loss": loss})
        return Message(RecordDict({"arrays": ArrayRecord(head.state_dict()), "metrics": metrics}), reply_to=msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        count, sums, squares = moments(_site(site_path, context, msg.content["config"]).train_x)
        metrics = MetricRecord({"count": count, "sum": sums.tolist(), "sum-squares": squares.tolist()})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        _, site, head = received(msg, context)
        positives, true_positives, predicted = threshold_counts(site.val_y.dense(), score(head, site.val_x))
        metrics = MetricRecord({"num-examples": len(site.val_x), "positives": int(positives),
                                "true-positives": [int(v) for v in true_positives],
                                "predicted": [int(v) for v in predicted]})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


def sum_counts(contents: list[RecordDict], weight_key: str) -> MetricRecord:
    """Flower `evaluate_metrics_aggr_fn`: the sites' counts summed (not averaged), with the pooled micro-F1 at the
    tuned threshold."""
    records = [next(iter(content.metric_records.values())) for content in contents]
    total = {key: np.sum([np.asarray(r[key], dtype=np.int64) for r in records], axis=0) for key in
             (weight_key, *COUNT_KEYS)}
    threshold, f1 = best_threshold(total["positives"], total["true-positives"], total["predicted"])
    return MetricRecord({weight_key: int(total[weight_key]), "sites": len(records), "f1_micro": f1,
                         "threshold": threshold})


@dataclass
class Experiment:
    """One federated training: a name for the logs and the train config (`head_config`), whose "data" names the site
    files the clients read and whose "seed" starts the head."""

    name: str
    config: dict


def head_config(design: str, dim: int, n_labels: int, label_hash: str, data: str, hidden_size: int, dropout: float,
                lr: float, weight_decay: float, batch_size: int, local_epochs: int, seed: int) -> dict:
    return {"design": design, "dim": dim, "n-labels": n_labels, "label-hash": label_hash, "data": data,
            "hidden-size": hidden_size, "dropout": dropout, "lr": lr, "weight-decay": weight_decay,
            "batch-size": batch_size, "local-epochs": local_epochs, "seed": seed}


def initial_head(config: dict, seed: int, input_moments: tuple | None = None) -> torch.nn.Module:
    """The starting weights of a head: seeded, so the centralized and the federated runs start from the same ones;
    standardized by the training embeddings' summed `moments` when given."""
    torch.manual_seed(seed)
    head = _head(ConfigRecord(config))
    return set_moments(head, *input_moments) if input_moments is not None else head


def federated_moments(grid: Grid, config: dict, clients: int, timeout: float = 3600.0) -> tuple:
    """The summed `moments` of every site's training embeddings (one query message per site, once `clients` sites
    are connected)."""
    waited = 0.0
    while len(nodes := list(grid.get_node_ids())) < clients:
        if waited > timeout:
            raise RuntimeError(f"only {len(nodes)} of {clients} sites connected after {timeout:.0f} s")
        time.sleep(1.0)
        waited += 1.0
    replies = list(grid.send_and_receive([Message(RecordDict({"config": ConfigRecord(config)}), dst_node_id=node,
                                                  message_type=MessageType.QUERY) for node in nodes],
                                         timeout=timeout))
    failed = [reply.error.reason for reply in replies if reply.has_error()]
    if failed or len(replies) < len(nodes):
        raise RuntimeError(f"{len(nodes) - len(replies) + len(failed)} of {len(nodes)} sites did not send their "
                           f"embedding moments: {failed[:1]}")
    records = [reply.content["metrics"] for reply in replies]
    return (sum(int(r["count"]) for r in records), np.sum([r["sum"] for r in records], axis=0),
            np.sum([r["sum-squares"] for r in records], axis=0))


def run_experiment(grid: Grid, experiment: Experiment, clients: int, rounds: int, strategy: str, proximal_mu: float,
                   fraction_train: float, log_round: Callable[[dict], None] | None = None) -> dict:
    """One federated training on the connected sites: {"state": the best round's weights, "round", "threshold",
    "val_f1_micro", "rounds": per-round metrics}."""
    from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

    latest: dict = {}  # this round's aggregated train and validation metrics, read by keep_best

    def train_metrics(contents: list[RecordDict], weight_key: str) -> MetricRecord:
        record = aggregate_metricrecords(contents, weight_key)
        latest.update(trained=len(contents), train_loss=float(record["train-loss"]))
        return record

    def validation_metrics(contents: list[RecordDict], weight_key: str) -> MetricRecord:
        latest["val"] = sum_counts(contents, weight_key)
        return latest["val"]

    settings = dict(fraction_train=fraction_train, fraction_evaluate=1.0,
                    min_train_nodes=max(1, int(round(fraction_train * clients))), min_evaluate_nodes=clients,
                    min_available_nodes=clients, train_metrics_aggr_fn=train_metrics,
                    evaluate_metrics_aggr_fn=validation_metrics)
    fed = FedProx(proximal_mu=proximal_mu, **settings) if strategy == "fedprox" else FedAvg(**settings)
    sampled = settings["min_train_nodes"]  # FedAvg samples max(int(fraction x sites), min_train_nodes)
    history: list[dict] = []
    best: dict = {"val_f1_micro": -1.0}

    def keep_best(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        # Flower calls this after each round's federated validation with the round's global weights (and once
        # before round 1 with the initial ones, which no site validated).
        if server_round == 0:
            return None
        # Every sampled site must train and every site validate: the pooled threshold and micro-F1 need all of
        # them, and a site that failed is an error to see (Flower only logs it), not a round quietly averaged
        # without it.
        val, trained = latest.pop("val", {"sites": 0}), latest.pop("trained", 0)
        if val["sites"] < clients or trained < sampled:
            raise RuntimeError(f"{experiment.name} round {server_round}: {trained} of {sampled} sites trained and "
                               f"{val['sites']} of {clients} validated; the failures are in Flower's log above")
        entry = {"round": server_round, "train_loss": latest.pop("train_loss"),
                 "sites_trained": trained, "sites_validated": val["sites"],
                 "val_f1_micro": float(val["f1_micro"]), "threshold": float(val["threshold"])}
        history.append(entry)
        if log_round:
            log_round(entry)
        if entry["val_f1_micro"] > best["val_f1_micro"]:
            best.update(state=arrays.to_torch_state_dict(), round=server_round, threshold=entry["threshold"],
                        val_f1_micro=entry["val_f1_micro"])
        return None

    start = initial_head(experiment.config, int(experiment.config["seed"]),
                         federated_moments(grid, experiment.config, clients))
    fed.start(grid=grid, num_rounds=rounds, train_config=ConfigRecord(experiment.config),
              evaluate_config=ConfigRecord(experiment.config), evaluate_fn=keep_best,
              initial_arrays=ArrayRecord(start.state_dict()))
    return {**best, "rounds": history}


def _deployed_site(context: Context, data: str) -> str:
    return str(context.node_config["data-path"])


# The apps `flwr run` starts across real sites (README "Across real sites"): each SuperNode is started with
# --node-config "data-path='/path/to/site.npz'"; the run config names the head and the rounds.
client_app = make_client_app(_deployed_site)
server_app = ServerApp()


@server_app.main()
def _deployed_main(grid: Grid, context: Context) -> None:
    # Every key comes from the app's run config (configs/finetune/federated/flower-app/pyproject.toml, overridable
    # with `flwr run --run-config`), so no default is repeated here.
    rc = context.run_config
    if not int(rc["n-labels"]) or not rc["label-hash"]:
        raise UserError("run config: set dim, n-labels and label-hash to what `cmbert finetune federated site` printed")
    config = head_config(str(rc["design"]), int(rc["dim"]), int(rc["n-labels"]), str(rc["label-hash"]), "site",
                         int(rc["hidden-size"]), float(rc["dropout"]), float(rc["lr"]), float(rc["weight-decay"]),
                         int(rc["batch-size"]), int(rc["local-epochs"]), int(rc["seed"]))
    found = run_experiment(grid, Experiment("deployed", config), int(rc["clients"]),
                           int(rc["rounds"]), str(rc["strategy"]), float(rc["proximal-mu"]), float(rc["fraction-train"]),
                           log_round=lambda entry: logging.getLogger("flwr").warning(json.dumps(entry)))
    save_head(Path(str(rc["out"])), found["state"], config, found["threshold"],
              {"best_round": found["round"], "rounds": found["rounds"]})


def save_head(folder: Path, state: dict, config: dict, threshold: float, extra: dict) -> None:
    """A head folder: head.pt (its weights) and meta.json (its design, label hash and tuned threshold)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "head.pt")
    (folder / "meta.json").write_text(json.dumps({"config": config, "threshold": threshold, **extra}, indent=1) + "\n",
                                      encoding="utf-8")

