"""textgen inference server: launcher, HTTP router, scheduler, shards, models, backends."""
