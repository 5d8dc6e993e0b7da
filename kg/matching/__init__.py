"""Pure, database-free matching of concept names: folding, blocking keys, signals, one score,
three bands and order-free grouping. Shared by ingestion (`kg.extraction.resolve`) and the
resolution pass (`kg.resolution`), which may not import each other."""
