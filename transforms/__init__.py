"""The shared transform library every job draws on (see docs/architecture.md)."""
