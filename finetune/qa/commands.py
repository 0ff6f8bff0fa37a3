"""`cmbert finetune qa train`, `cmbert predict qa`. A literal table that `cmbert.cli` reads without importing this
package (the format is in its docstring)."""

GROUPS = {("finetune", "qa"): "extractive question answering (SQuAD v1.1 / v2.0, RadQA): answer spans in long "
                              "contexts"}

COMMANDS = {
    ("finetune", "qa", "train"): {
        "config": "cmbert.finetune.qa.config:load_qa_config",
        "run": "cmbert.finetune.qa.train:main",
        "show": "cmbert.finetune.qa.train:format_summary",
        "example": "cmbert finetune qa train --config configs/finetune/qa/demo.yaml data.train=radqa/train.json "
                   "data.validation=radqa/dev.json data.test=radqa/test.json model.init_from=runs/demo/model",
        "help": "extractive question answering from SQuAD .json, .jsonl or a local `datasets` folder, with strided "
                "windows, unanswerable questions, optional LoRA and layer pruning; writes a stock transformers model, "
                "report.json (SQuAD v2 EM / F1) and predictions",
    },
    ("predict", "qa"): {
        "config": "cmbert.finetune.qa.config:load_qa_predict_config",
        "fields": "cmbert.finetune.qa.config:QaPredictConfig",
        "preset": "configs/predict/qa.yaml",
        "run": "cmbert.finetune.qa.predict:predict_from_config",
        "show": "cmbert.finetune.qa.predict:format_summary",
        "stderr": True,
        "record": True,
        "help": "answers to questions over contexts (\"\" when the context has none) with the window settings and "
                "no-answer threshold the model was trained with; prints counts and, for a labelled input, SQuAD v2 "
                "scores",
    },
}
