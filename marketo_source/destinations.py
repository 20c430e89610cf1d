"""The filesystem destination as this source needs it.

dlt writes Arrow tables (activities) as Parquet but Python rows (the type catalog) as JSON lines
unless told otherwise, and JSON lines lose the column types. Plain Parquet files cannot merge:
dlt 1.31 loads `merge` tables with `append` there, so rows read again repeat (see the README's
"Destinations"). Delta tables merge, and need the `deltalake` package (`pip install
"marketo-source[delta]"`).
"""

from typing import Literal, Optional

import dlt


def filesystem_destination(bucket_url: Optional[str] = None,
                           table_format: Optional[Literal["delta"]] = None) -> dlt.destinations.filesystem:
    """dlt's filesystem destination writing every table as Parquet, or as Delta tables.

    Without `bucket_url`, dlt reads it from `[destination.filesystem]` in `.dlt/config.toml` or
    from `DESTINATION__FILESYSTEM__BUCKET_URL`.
    """
    # dlt annotates bucket_url as str, though its default, None, is what makes it read the configuration.
    return dlt.destinations.filesystem(bucket_url,  # type: ignore[arg-type]
                                       preferred_loader_file_format="parquet",
                                       preferred_table_format=table_format)
