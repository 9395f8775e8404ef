"""Images: the store, the denylist, who may see what, bytes and previews, uploads."""
