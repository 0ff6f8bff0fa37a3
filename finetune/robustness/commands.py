"""`cmbert audit robustness`. A literal table that `cmbert.cli` reads without importing this package (the format is in
its docstring); the settings are a typed config (`cmbert.finetune.robustness.config`)."""

GROUPS = {("audit",): "audit a model's robustness"}

COMMANDS = {
    ("audit", "robustness"): {
        "config": "cmbert.finetune.robustness.config:load_audit_config",
        "fields": "cmbert.finetune.robustness.config:AuditConfig",
        "preset": "configs/audit/robustness.yaml",
        "run": "cmbert.finetune.robustness.audit:audit_from_config",
        "show": "cmbert.finetune.robustness.audit:format_audit",
        "record": True,
        "help": "LAPD robustness audit: mask / negate / synonym / numeric perturbations of held-out notes, latent "
                "diagnosis flip rate (LDFR) in PCA space beside the fine-tuned ICD head's surface change; writes "
                "report.json, robustness.png, per_note.csv, perturbed/",
    },
}
