"""The loops that drive incidents, drills, alerts and notices, built on the core and the adapters."""
