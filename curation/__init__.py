"""Plain functions, one module per corpus stage. No Prefect, no torch: `flows/` orchestrates."""
