"""The sync runtime (container side): plans, engines, reports, run control."""
