"""``watch``: what crosses NATS and the blobstore, as timeline events (docs/watch.md).

``correlator`` (pure) turns NATS messages into events, ``blob_log`` turns nginx's access log into ``blob``
events, ``hub`` orders, buffers and fans them out to readers (``GET /watch``), ``tap`` connects it all (the
read-only ``monitor`` NATS user, the log tail), ``directory`` names agents and addresses from the store."""
