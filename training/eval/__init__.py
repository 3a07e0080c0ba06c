"""Proactive evaluation: the ProactiveVideoQA file formats, streaming predictions with latency,
and scoring (PAUC at several omegas, judge scores)."""
