"""Former path of :mod:`interestflow.tracking` (segments tracked over time), kept so that
``from interestflow.dynamics import SegmentTracker`` and the other names below keep working.
New code imports from :mod:`interestflow.tracking`."""

from .tracking import (
    TRACKING_TABLES,
    SegmentTracker,
    __test__,  # noqa: F401  (doctest.testmod of this module runs the names' examples)
    cluster_users,
    match_segments,
    tracking_schemas,
    update_segments,
)

__all__ = ["SegmentTracker", "cluster_users", "match_segments", "update_segments",
           "tracking_schemas", "TRACKING_TABLES"]
