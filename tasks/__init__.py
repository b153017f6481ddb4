"""Pipeline stages: pure functions doing the work plus thin Prefect task wrappers."""
