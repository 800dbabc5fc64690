"""The process: kopf handlers, the HTTP server, leader election and their wiring (the only kopf user)."""
