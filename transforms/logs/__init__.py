"""What is particular to log monitoring: the log record, its decoders, templates."""
