"""The home service (tools/serve.py): many cameras on one box, one encoder and one CRT for all,
activity episodes in SQLite, an HTTP API with a live page, and MQTT."""
