"""Pushing custom activities into Marketo exactly once, from Python or as a dlt destination.

Rows have the columns `lead_id` (or `leadId`), `activity_date`, `activity_type_id` or
`activity_type_api_name` (or else the pusher's default type), `primary_attribute_value` and
optionally `row_key`; every other column is an attribute of the type, by apiName. A row's key is
its `row_key`, else a hash of the item it makes, so identical rows without one count once.

Custom activities are write-once: Marketo adds an item sent twice twice. So every row gets a key
and a line in a local ledger (a DuckDB file) before it is sent, and the ledger decides:

- a row whose key is already `added` or `skipped` is not sent again;
- a batch is marked `sending` (and committed) before its call, and each item's result is
  recorded right after;
- a call that may or may not have been applied (a timeout, a reset, a 5xx, 604/608/611/713:
  the client raises `MarketoWriteUncertain` instead of resending) and rows found `sending`
  when a push starts (the process died mid-call) are reconciled: their activities are read back
  from Marketo and matched by (leadId, activityTypeId, activityDate, primaryAttributeValue);
  matches are recorded as `added`, the rest is sent again.

dlt's custom destination keeps, per load file, the offset of the last batch the destination
function returned from, so after a crash it delivers the unfinished batch again; the ledger is
what turns that at-least-once delivery into exactly once.

    import dlt
    from marketo_source.custom_activities import marketo_custom_activities

    pipeline = dlt.pipeline("usage_to_marketo", destination=marketo_custom_activities(
        activity_type_api_name="productUsage"))
    pipeline.run(rows, table_name="product_usage")  # base_url and secrets from destination.marketo_custom_activities

Where each part lives: `items` turns rows into items, `ledger` keeps the ledger, `pusher` sends
and reconciles, `summary` counts what a push did, `destination` is the dlt destination.
"""

from marketo_source.custom_activities.destination import marketo_custom_activities
from marketo_source.custom_activities.items import (
    DATE_COLUMN,
    LEAD_ID_COLUMNS,
    LOCAL_REJECTION_CODE,
    PRIMARY_VALUE_COLUMN,
    ROW_KEY_COLUMN,
    TYPE_API_NAME_COLUMN,
    TYPE_ID_COLUMN,
    MatchKey,
)
from marketo_source.custom_activities.ledger import DEFAULT_LEDGER_PATH, LEDGER_TABLE, ActivityLedger
from marketo_source.custom_activities.pusher import (
    DEFAULT_RECONCILE_AFTER_S,
    MAX_UNCERTAIN_ROUNDS,
    CustomActivityPusher,
)
from marketo_source.custom_activities.summary import PushSummary

__all__ = [
    "marketo_custom_activities",
    "ActivityLedger",
    "CustomActivityPusher",
    "PushSummary",
    "MatchKey",
    "DEFAULT_LEDGER_PATH",
    "DEFAULT_RECONCILE_AFTER_S",
    "LEDGER_TABLE",
    "LOCAL_REJECTION_CODE",
    "MAX_UNCERTAIN_ROUNDS",
    "LEAD_ID_COLUMNS",
    "DATE_COLUMN",
    "TYPE_ID_COLUMN",
    "TYPE_API_NAME_COLUMN",
    "PRIMARY_VALUE_COLUMN",
    "ROW_KEY_COLUMN",
]
