"""Recall dev set (training splits of public ontology benchmarks) and its measuring harness."""
