"""scikit-learn's private names that dynlearn's estimators build on, imported in one place.

``Interval``, ``StrOptions`` and ``validate_parameter_constraints`` declare and check
hyperparameters (the ``_parameter_constraints`` tables and their one message shape),
``InvalidParameterError`` is what those checks raise, and ``available_if`` hides a
method an estimator cannot offer. None of them is public scikit-learn API, so
pyproject.toml bounds scikit-learn above and ``tests/test_private_internals.py``
checks each name does what dynlearn expects (ARCHITECTURE.md, "Dependencies on
private internals").
"""

from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_parameter_constraints,
)

__all__ = ["Interval", "InvalidParameterError", "StrOptions", "available_if", "validate_parameter_constraints"]
