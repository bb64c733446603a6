"""Running raysync on a Ray cluster: job entrypoint and manifests."""
