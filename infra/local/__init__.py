"""`make up` / `make down`: the platform services as local processes on 127.0.0.1."""
