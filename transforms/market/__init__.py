"""What is particular to market data: trades, bars, VWAP, anomaly flags."""
