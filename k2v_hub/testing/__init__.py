"""Test helpers for k2v-hub: a local Hub-compatible HTTP server (`k2v_hub.testing.hub_server`) and hostile model
repos with the peak-memory measurement of indexing them (`k2v_hub.testing.hostile`)."""
