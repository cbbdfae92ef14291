"""The FastAPI serving container (search and chat over the vector index); see issue 4."""
