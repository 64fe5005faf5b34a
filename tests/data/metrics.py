"""The metrics contract of docs/DESIGN.md ("Metrics"), plus the extras its decisions add:
metric name → (type, label names)."""

from __future__ import annotations

SV = ("stream", "venue")
# DESIGN.md's metrics contract (+ the documented extras): name → (type, labels).
CONTRACT: dict[str, tuple[str, tuple[str, ...]]] = {
    "bridge_ws_connected": ("gauge", SV),
    "bridge_ws_reconnects_total": ("counter", (*SV, "reason")),
    "bridge_ws_sessions_total": ("counter", SV),
    "bridge_ws_messages_received_total": ("counter", SV),
    "bridge_ws_last_message_timestamp_seconds": ("gauge", SV),
    "bridge_records_published_total": ("counter", (*SV, "topic")),
    "bridge_deadletter_total": ("counter", (*SV, "reason")),
    "bridge_publish_errors_total": ("counter", (*SV, "topic")),
    "bridge_event_lag_seconds": ("histogram", SV),
    "bridge_pipeline_latency_seconds": ("histogram", SV),
    "bridge_producer_buffer_records": ("gauge", ()),
    "bridge_auth_failures_total": ("counter", SV),
    "bridge_snapshot_records_total": ("counter", SV),
    "bridge_build_info": ("gauge", ("version",)),
    "bridge_kafka_up": ("gauge", ()),
    "bridge_kafka_auth_failures_total": ("counter", ()),
    # extras (DESIGN.md, decisions)
    "bridge_ws_subscribed": ("gauge", SV),
    "bridge_control_frames_total": ("counter", SV),
    "bridge_producer_buffer_capacity_records": ("gauge", ()),
    "bridge_producer_oldest_unacked_age_seconds": ("gauge", ()),
    "bridge_snapshot_failures_total": ("counter", (*SV, "reason")),
    "bridge_snapshot_last_success_timestamp_seconds": ("gauge", SV),
    # durable state (issue 13)
    "bridge_reconcile_drift_total": ("counter", (*SV, "topic")),
    "bridge_state_restored_keys": ("gauge", SV),
    "bridge_state_restore_seconds": ("gauge", ()),
    # the disk buffer (issue 13, item 6): one per process
    "bridge_disk_buffer_bytes": ("gauge", ()),
    "bridge_disk_buffer_capacity_bytes": ("gauge", ()),
    "bridge_disk_buffer_frames": ("gauge", ()),
    "bridge_disk_buffer_replayed_frames_total": ("counter", ()),
    "bridge_disk_buffer_torn_entries_total": ("counter", ()),
    "bridge_disk_buffer_write_errors_total": ("counter", ()),
    # fleet mode (issue 14)
    "bridge_stream_owned": ("gauge", SV),
    "bridge_fleet_members": ("gauge", ()),
    "bridge_fleet_shards_assigned": ("gauge", ()),
    "bridge_fleet_rebalances_total": ("counter", ()),
    "bridge_fleet_stream_starts_total": ("counter", ()),
    "bridge_fleet_stream_stops_total": ("counter", ("reason",)),
    "bridge_fleet_lease_expirations_total": ("counter", ()),
    # sizing (issue 17 session 10): BridgeMemoryNearLimit's denominator
    "bridge_memory_limit_bytes": ("gauge", ()),
    "bridge_state_keys": ("gauge", SV),
}
