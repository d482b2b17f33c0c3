"""What is particular to sensor streams: readings, calibration, statistics, incidents."""
