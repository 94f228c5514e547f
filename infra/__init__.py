"""Infrastructure of pharia: the local platform (`infra/local`), cluster manifests and images."""
