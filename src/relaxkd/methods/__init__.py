"""KD methods as plug-ins: one file per method, each registered by name in ``METHODS``.

Built-in: ``kd`` (vanilla / the paper's crossmodal KD), ``zscore``, ``dkd``, ``none``, ``lfme``,
``ffkd`` and ``dmae``. A new logit-only method is one file::

    from relaxkd.methods import LogitMethod, LogitParams, register_method

    @register_method("mykd")
    class MyKD(LogitMethod):
        Params = LogitParams            # or a subclass with defaults and extra fields

        def kd_term(self, student, teacher, step):
            ...                         # a scalar tensor

then ``distill.loss=mykd`` (see docs/architecture.md).
"""
from relaxkd.methods import dkd, dmae, ffkd, kd, lfme, none, zscore  # noqa: E402,F401  (register built-ins)
from relaxkd.methods.base import (
    METHODS,
    SHARED_FIELDS,
    KDMethod,
    LogitMethod,
    LogitParams,
    MethodContext,
    MethodParams,
    Outputs,
    Step,
    build_method,
    check_method_inputs,
    method_params,
    register_method,
    resolved_params,
)
from relaxkd.methods.features import FeatureTap

__all__ = [
    "METHODS",
    "SHARED_FIELDS",
    "FeatureTap",
    "KDMethod",
    "LogitMethod",
    "LogitParams",
    "MethodContext",
    "MethodParams",
    "Outputs",
    "Step",
    "build_method",
    "check_method_inputs",
    "method_params",
    "register_method",
    "resolved_params",
]
