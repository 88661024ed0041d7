"""Test helpers for k2v-hub: a local Hub-compatible HTTP server (`k2v_hub.testing.hub_server`)."""
