"""Two questions answered from the loaded tables: a lead's field history, and email engagement by week.

    python pipelines/analytics.py --database marketo_sandbox.duckdb [--lead-id 1001]

Run it after `python pipelines/marketo_pipeline.py --sandbox` (or on your own load).
"""

import argparse
from typing import Any, List, Tuple

import duckdb

FIELD_HISTORY = """
    select activity_date, field_name, old_value, new_value
    from {dataset}.lead_field_changes
    where lead_id = ?
    order by activity_date, field_id
"""

EMAIL_ENGAGEMENT_BY_WEEK = """
    with events as (
        select activity_date, 'sent' as event from {dataset}.activity_send_email
        union all select activity_date, 'delivered' from {dataset}.activity_email_delivered
        union all select activity_date, 'opened' from {dataset}.activity_open_email
        union all select activity_date, 'clicked' from {dataset}.activity_click_email
    )
    select
        date_trunc('week', activity_date at time zone 'UTC')::date as week,
        count(*) filter (where event = 'sent') as sent,
        count(*) filter (where event = 'delivered') as delivered,
        count(*) filter (where event = 'opened') as opened,
        count(*) filter (where event = 'clicked') as clicked,
        round(count(*) filter (where event = 'opened') / nullif(count(*) filter (where event = 'delivered'), 0), 3)
            as open_rate,
        round(count(*) filter (where event = 'clicked') / nullif(count(*) filter (where event = 'opened'), 0), 3)
            as click_to_open_rate
    from events
    group by week
    order by week
"""
"""Weeks start on Monday, in UTC. Each step counts in the week of its own activity date: an email sent
late in one week and opened in the next counts as sent in one and opened in the other, so on real data
a week's rates can exceed 1. The sandbox dates every step of an email in the week of its Send Email."""

BUSIEST_LEAD = """
    select lead_id from {dataset}.lead_field_changes
    group by lead_id
    order by count(*) desc, lead_id
    limit 1
"""
"""The lead with the most field changes; the lowest id among equals."""


def field_history(db: duckdb.DuckDBPyConnection, lead_id: int, dataset: str = "marketo") -> List[Tuple[Any, ...]]:
    """Every change of every field of one lead, oldest first."""
    return db.execute(FIELD_HISTORY.format(dataset=dataset), [lead_id]).fetchall()


def email_engagement_by_week(db: duckdb.DuckDBPyConnection, dataset: str = "marketo") -> List[Tuple[Any, ...]]:
    """Emails sent, delivered, opened and clicked per week, with the open and click-to-open rates."""
    return db.execute(EMAIL_ENGAGEMENT_BY_WEEK.format(dataset=dataset)).fetchall()


def _busiest_lead(db: duckdb.DuckDBPyConnection, dataset: str) -> int:
    row = db.execute(BUSIEST_LEAD.format(dataset=dataset)).fetchone()
    if row is None:
        raise SystemExit(f"{dataset}.lead_field_changes is empty: name a lead with --lead-id")
    return int(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="marketo_sandbox.duckdb",
                        help="the DuckDB file the pipeline loaded (default: marketo_sandbox.duckdb, the demo's)")
    parser.add_argument("--dataset", default="marketo", help="the dataset (schema) it loaded (default: marketo)")
    parser.add_argument("--lead-id", type=int, help="default: the lead with the most field changes")
    args = parser.parse_args()
    with duckdb.connect(args.database, read_only=True) as db:
        lead_id = args.lead_id or _busiest_lead(db, args.dataset)
        print(f"Field history of lead {lead_id}:")
        for when, field, old, new in field_history(db, lead_id, args.dataset):
            print(f"  {when:%Y-%m-%d %H:%M}  {field:<20} {old or '':<20} -> {new}")
        print("\nEmail engagement by week (Monday, UTC):")
        print(f"  {'week':<10} {'sent':>6} {'deliv.':>6} {'opened':>6} {'clicked':>7} {'open rate':>9} {'CTOR':>6}")
        for week, sent, delivered, opened, clicked, open_rate, ctor in email_engagement_by_week(db, args.dataset):
            print(f"  {week}  {sent:>6} {delivered:>6} {opened:>6} {clicked:>7} "
                  f"{open_rate or 0:>9.3f} {ctor or 0:>6.3f}")


if __name__ == "__main__":
    main()
