"""Named sets of loss weights and method defaults, defined once (torch-free: the config reads them)."""

#: softmax temperature of the ``wn`` text mode's soft retrieval from the relaxed bank (docs/method.md §5)
RETRIEVAL_TEMPERATURE = 0.005

#: eq. 6 weights (docs/method.md §6, §12): the paper's (λ_hier 0.1, λ_cos 0.01) and the authors' released code's.
MULTIMODAL_PRESETS = {
    "paper": {"lambda_hier": 0.1, "lambda_cos": 0.01},
    "authors_code": {"lambda_hier": 0.2, "lambda_cos": 0.005},
}
#: eqs. 2-3: the paper gives no τ or λ. The authors' released scripts (chenqiguo/CrossmodalKD,
#: script/script_*_regularizerV2.sh) use τ 3, CE 0.6 / KD 0.4 and average per-teacher KD losses.
#: KD's own recipe (relaxkd/methods/kd.py) takes its τ and weights from here.
DISTILL_PRESETS = {
    "authors_code": {"ce_weight": 0.6, "kd_weight": 0.4, "temperature": 3.0, "aggregate": "mean_losses"},
}
