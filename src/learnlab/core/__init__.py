"""The shared core: configs and presets, claims, run directories, the report, errors."""

from learnlab.core.claims import Claim, above, at_least, at_most, below, is_true, within
from learnlab.core.config import StudyConfig, nonnegative, positive, ranged
from learnlab.core.errors import DivergenceError, UserError
from learnlab.core.registry import Study
from learnlab.core.runs import RunContext

__all__ = [
    "Claim",
    "DivergenceError",
    "RunContext",
    "Study",
    "StudyConfig",
    "UserError",
    "above",
    "at_least",
    "at_most",
    "below",
    "is_true",
    "nonnegative",
    "positive",
    "ranged",
    "within",
]
