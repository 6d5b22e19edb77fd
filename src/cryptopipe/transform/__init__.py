"""Transform stage: lookback history, indicators, anomalies, alert records and charts."""
