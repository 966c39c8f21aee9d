"""Tools that compute on slides (``st.tl``): pretraining, adaptation, embeddings, domains, predicted expression, heads and risk."""

from .._frame import deprecated_alias
from ._adapt import adapt
from ._domains import domains
from ._embed import embed
from ._features import feature_extraction
from ._heads import StormHead, apply_head, apply_risk, fit_head, fit_risk
from ._integrate import integrate
from ._predict import predict_expression
from ._pretrain import pretrain
from ._transfer import transfer_labels

#: The previous release's names, kept for one release (each call warns).
finetune = deprecated_alias(fit_head, "finetune")
annotate = deprecated_alias(apply_head, "annotate")
risk = deprecated_alias(apply_risk, "risk")

__all__ = [
    "StormHead",
    "adapt",
    "annotate",
    "apply_head",
    "apply_risk",
    "domains",
    "embed",
    "feature_extraction",
    "finetune",
    "fit_head",
    "fit_risk",
    "integrate",
    "predict_expression",
    "pretrain",
    "risk",
    "transfer_labels",
]

#: The torch modules of heads (``StormHead.module``), imported with torch on first use.
_HEAD_MODULES = ("AttentionMILHead", "SpotHead")


def __getattr__(name: str) -> object:
    if name in _HEAD_MODULES:
        from ._heads import _modules

        return getattr(_modules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HEAD_MODULES])
