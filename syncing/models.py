"""Syncing keeps its state in ``experiments.SyncState`` (table ``sync_states``)."""
