"""The only package that imports faust/aiokafka: the Faust app (app.py), its at-least-once delivery rules
(delivery.py), its long-running services (services.py) and its topics (topics.py)."""
