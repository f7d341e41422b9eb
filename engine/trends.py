"""Former path of :mod:`interestflow.tracking.trends` (items and keywords rising inside
segments), kept so that ``from interestflow.trends import rising_keys`` keeps working."""

from .tracking.trends import TREND_COLUMNS, empty_trends, rising_keys

__all__ = ["rising_keys", "TREND_COLUMNS", "empty_trends"]
