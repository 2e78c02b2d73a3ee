"""Nexus scheduling: sessions, plans, squishy bin packing, query analysis, actuation."""
