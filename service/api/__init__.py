"""The HTTP API: FastAPI app, request/response models, dependencies and routes."""
