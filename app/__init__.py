"""The sentiment-analysis HTTP service (FastAPI + dynamic batching); `uvicorn app.main:app`."""
