"""Entity resolution over the stored graph: candidate pairs by several cheap signals, a score,
three bands (merge, keep apart, review), and order-free grouping. Merges go through
kg.curation, so each one is a decision that `kg curation undo` reverts."""
