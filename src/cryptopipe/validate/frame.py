"""The staging table as the pandas DataFrame GX validates, with the helper columns of the cross-field checks.

The frame's index is the row position in the Arrow table, so GX's ``unexpected_index_list`` points straight
back at the rows to quarantine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from cryptopipe.core.config import QualitySettings
from cryptopipe.validate.suite import HIGH_BOUND, LOW_BOUND, MCAP_DEVIATION

if TYPE_CHECKING:
    import pandas as pd


def _numeric(df: pd.DataFrame, column: str) -> pd.Series:
    """A column as floats (NaN where missing or not numeric): a mistyped column fails its type check, not this."""
    import numpy as np
    import pandas as pd

    if column not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype="float64")
    return pd.to_numeric(df[column], errors="coerce").astype("float64")


def to_frame(table: pa.Table, quality: QualitySettings) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    # int32 as the nullable Int32 dtype: plain to_pandas turns an int column with nulls into float64, which
    # would make the column's type depend on whether this hour happened to have a null.
    df = table.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)
    df.index = pd.RangeIndex(len(df))

    price = _numeric(df, "price")
    low, high = _numeric(df, "low_24h"), _numeric(df, "high_24h")
    both = (low > 0) & (high > 0)  # NaN compares False: a missing or zero bound skips the check
    tol = quality.high_low_tolerance
    df[LOW_BOUND] = low.where(both) * (1 - tol)
    df[HIGH_BOUND] = high.where(both) * (1 + tol)

    market_cap, supply = _numeric(df, "market_cap"), _numeric(df, "circulating_supply")
    with np.errstate(all="ignore"):
        implied = price * supply
        deviation = (market_cap / implied - 1).abs()
    usable = (market_cap > 0) & (price > 0) & (supply > 0) & np.isfinite(implied) & (implied > 0)
    df[MCAP_DEVIATION] = deviation.where(usable)
    return df
