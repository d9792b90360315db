"""Training-service mode: an HTTP service that owns the policy + optimizer (`nexrl serve-trainer`,
server.py over service.py), its typed client, and TrainingServiceTrainer, which the controller drives.

Importing this package imports no web framework; server.py does (fastapi, uvicorn).
"""
