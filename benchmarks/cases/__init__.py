"""The benchmark cases, one module each; every module has ``run(quick, fresh) -> CaseResult``."""

CASES = ("overhead", "rerun", "defaults", "qlora_vs_lora", "live_chart", "startup", "merge_generate", "data_scale")
